// The request and result lines of `vlcache-run --jsonl` (docs/contract.md).
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/engine.h"

namespace vlcache {
namespace tools {

struct RequestLine {
  nlohmann::json id;  // echoed back as given (string or number); null when absent
  GenerationRequest request;
};

// Parses one request line. Fields absent from the line keep the engine's
// defaults; unknown fields are ignored so evaluation scripts can carry their
// own annotations. On error, line->id is still set when the line had one.
Status ParseRequestLine(const std::string& text, RequestLine* line);

// {"id", "output_ids", "finish_reason", "stats"} (+ "error" for kError).
std::string ResultLine(const nlohmann::json& id, const std::vector<int32_t>& output_ids,
                       FinishReason reason, const SequenceStats& stats,
                       const std::string& error);
// {"id", "error"}: the engine refused the request.
std::string ErrorLine(const nlohmann::json& id, const std::string& error);

}  // namespace tools
}  // namespace vlcache
