#include "triton/model_config.h"

#include <functional>

#include <gtest/gtest.h>

#include "triton/contract.h"

namespace vlcache {
namespace triton {
namespace {

using nlohmann::json;

// The JSON Triton hands the backend for a config.pbtxt that follows the
// contract (int64 dims as strings, as protobuf's JSON mapping writes them).
json ContractConfig() {
  json config = {{"name", "tiny"},
                 {"backend", "vlcache"},
                 {"max_batch_size", 0},
                 {"model_transaction_policy", {{"decoupled", true}}},
                 {"instance_group", json::array({{{"kind", "KIND_CPU"}, {"count", 1}}})}};
  for (const TensorSpec& spec : ContractInputs()) {
    json dims = json::array();
    for (int64_t d : spec.dims) dims.push_back(std::to_string(d));
    config["input"].push_back({{"name", spec.name},
                               {"data_type", std::string("TYPE_") +
                                                 (spec.type == DataType::kBytes
                                                      ? "STRING"
                                                      : DataTypeName(spec.type))},
                               {"dims", dims},
                               {"optional", !spec.required}});
  }
  for (const TensorSpec& spec : ContractOutputs()) {
    config["output"].push_back(
        {{"name", spec.name},
         {"data_type", spec.type == DataType::kBytes ? "TYPE_STRING"
                                                     : std::string("TYPE_") +
                                                           DataTypeName(spec.type)},
         {"dims", spec.dims}});
  }
  config["parameters"] = {{"checkpoint", {{"string_value", "../../testdata/tiny"}}}};
  return config;
}

TEST(ModelConfigTest, ContractConfigIsValid) {
  Status status = ValidateModelConfig(ContractConfig());
  EXPECT_TRUE(status.ok()) << status.message;
}

TEST(ModelConfigTest, RejectsDeviationsNamingTheField) {
  struct Case {
    const char* what;
    std::function<void(json&)> edit;
    const char* needle;
  };
  const std::vector<Case> cases = {
      {"batching", [](json& c) { c["max_batch_size"] = 4; }, "max_batch_size"},
      {"not decoupled", [](json& c) { c["model_transaction_policy"]["decoupled"] = false; },
       "decoupled"},
      {"wrong input type", [](json& c) { c["input"][0]["data_type"] = "TYPE_INT64"; },
       "'input_ids' must be TYPE_INT32"},
      {"wrong dims", [](json& c) { c["input"][1]["dims"] = json::array({"-1", "3"}); },
       "'images' must have dims"},
      {"optional input_ids", [](json& c) { c["input"][0]["optional"] = true; },
       "'input_ids' must be required"},
      {"missing input", [](json& c) { c["input"].erase(c["input"].begin() + 9); },
       "'kv_policy' from the contract is missing"},
      {"extra input",
       [](json& c) {
         c["input"].push_back({{"name", "prompt"}, {"data_type", "TYPE_STRING"}, {"dims", {1}}});
       },
       "'prompt' is not in the contract"},
      {"missing output", [](json& c) { c["output"].erase(c["output"].begin() + 2); },
       "'stats' from the contract is missing"},
      {"model kind", [](json& c) { c["instance_group"][0]["kind"] = "KIND_MODEL"; },
       "instance_group"},
  };
  for (const Case& c : cases) {
    json config = ContractConfig();
    c.edit(config);
    Status status = ValidateModelConfig(config);
    ASSERT_FALSE(status.ok()) << c.what;
    EXPECT_NE(status.message.find(c.needle), std::string::npos)
        << c.what << ": got '" << status.message << "'";
  }
}

TEST(ModelConfigTest, ReadsParametersAndResolvesTheCheckpoint) {
  json config = ContractConfig();
  config["parameters"] = {{"checkpoint", {{"string_value", "../../testdata/tiny"}}},
                          {"default_policy", {{"string_value", "full"}}},
                          {"default_keep_ratio", {{"string_value", "0.5"}}},
                          {"default_budget_mode", {{"string_value", "paper"}}},
                          {"kv_pool_bytes", {{"string_value", "1048576"}}},
                          {"block_tokens", {{"string_value", "8"}}},
                          {"max_batch", {{"string_value", "3"}}},
                          {"threads", {{"string_value", "2"}}},
                          {"idle_wait_us", {{"string_value", "500"}}},
                          {"shutdown_drain_ms", {{"string_value", "100"}}},
                          {"step_delay_us", {{"string_value", "5000"}}}};
  ModelParameters p;
  Status status = ReadModelParameters(config, "/repo/triton_models/tiny", &p);
  ASSERT_TRUE(status.ok()) << status.message;
  EXPECT_EQ(p.engine.model_dir, "/repo/triton_models/tiny/../../testdata/tiny");
  EXPECT_EQ(p.engine.default_policy, "full");
  EXPECT_FLOAT_EQ(p.engine.default_keep_ratio, 0.5f);
  EXPECT_EQ(p.engine.default_budget_mode, "paper");
  EXPECT_EQ(p.engine.kv_pool_bytes, 1048576);
  EXPECT_EQ(p.engine.block_tokens, 8);
  EXPECT_EQ(p.engine.max_batch, 3);
  EXPECT_EQ(p.engine.threads, 2);
  EXPECT_EQ(p.idle_wait_us, 500);
  EXPECT_EQ(p.shutdown_drain_ms, 100);
  EXPECT_EQ(p.step_delay_us, 5000);

  config["parameters"]["checkpoint"]["string_value"] = "/models/llava";
  ASSERT_TRUE(ReadModelParameters(config, "/repo/triton_models/tiny", &p).ok());
  EXPECT_EQ(p.engine.model_dir, "/models/llava");
}

TEST(ModelConfigTest, RejectsBadParameters) {
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"default_keep_ratio", "0"},   {"default_keep_ratio", "1.1"},
      {"default_keep_ratio", "abc"}, {"kv_pool_bytes", "-5"},
      {"max_batch", "0"},            {"default_policy", "lru"},
      {"default_budget_mode", "x"},  {"kv_pool_byte", "1024"},  // a typo is an error
      {"step_delay_us", "-1"},
  };
  for (const auto& [key, value] : bad) {
    json config = ContractConfig();
    config["parameters"][key] = {{"string_value", value}};
    ModelParameters p;
    Status status = ReadModelParameters(config, "/m", &p);
    ASSERT_FALSE(status.ok()) << key << "=" << value;
    EXPECT_NE(status.message.find(key), std::string::npos) << status.message;
  }
  json config = ContractConfig();
  config["parameters"].erase("checkpoint");
  ModelParameters p;
  Status status = ReadModelParameters(config, "/m", &p);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message.find("checkpoint"), std::string::npos);
}

}  // namespace
}  // namespace triton
}  // namespace vlcache
