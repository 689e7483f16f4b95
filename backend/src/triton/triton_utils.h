// Small helpers at the edge of Triton's C API: logging through the server's
// log, and early returns on a TRITONSERVER_Error*.
#pragma once

#include <string>

#include "engine/engine.h"
#include "triton/core/tritonbackend.h"
#include "triton/core/tritonserver.h"

#define VLCACHE_LOG(level, msg)                                                   \
  do {                                                                            \
    const std::string _vlcache_msg = (msg);                                       \
    TRITONSERVER_Error* _vlcache_err =                                            \
        TRITONSERVER_LogMessage((level), __FILE__, __LINE__, _vlcache_msg.c_str()); \
    if (_vlcache_err != nullptr) TRITONSERVER_ErrorDelete(_vlcache_err);          \
  } while (0)

#define VLCACHE_LOG_INFO(msg) VLCACHE_LOG(TRITONSERVER_LOG_INFO, msg)
#define VLCACHE_LOG_WARN(msg) VLCACHE_LOG(TRITONSERVER_LOG_WARN, msg)
#define VLCACHE_LOG_ERROR(msg) VLCACHE_LOG(TRITONSERVER_LOG_ERROR, msg)

#define VLCACHE_RETURN_IF_TRITON_ERROR(expr)   \
  do {                                         \
    TRITONSERVER_Error* _vlcache_e = (expr);   \
    if (_vlcache_e != nullptr) return _vlcache_e; \
  } while (0)

namespace vlcache {
namespace triton {

inline TRITONSERVER_Error* ToTritonError(const Status& status,
                                         TRITONSERVER_Error_Code code = TRITONSERVER_ERROR_INVALID_ARG) {
  if (status.ok()) return nullptr;
  return TRITONSERVER_ErrorNew(code, status.message.c_str());
}

// Logs and frees an error from a call whose failure we can only report.
inline void LogIfError(TRITONSERVER_Error* err, const char* what) {
  if (err == nullptr) return;
  VLCACHE_LOG_ERROR(std::string(what) + ": " + TRITONSERVER_ErrorMessage(err));
  TRITONSERVER_ErrorDelete(err);
}

}  // namespace triton
}  // namespace vlcache
