// A small command-line flag parser for the tools: --name value or --name=value,
// booleans as --name / --name=false, repeatable string flags collected in order.
#pragma once

#include <string>
#include <vector>

#include "engine/engine.h"  // Status

namespace vlcache {
namespace tools {

class FlagSet {
 public:
  explicit FlagSet(std::string program) : program_(std::move(program)) {}

  void String(const char* name, std::string* value, const char* help);
  void Repeated(const char* name, std::vector<std::string>* values, const char* help);
  void Int(const char* name, int* value, const char* help);
  void Int64(const char* name, int64_t* value, const char* help);
  void Uint64(const char* name, uint64_t* value, const char* help);
  void Double(const char* name, double* value, const char* help);
  void Bool(const char* name, bool* value, const char* help);

  // Fills the registered variables; unknown flags and bad values are errors.
  // *help_requested is set for -h/--help (the caller prints Usage()).
  Status Parse(int argc, char** argv, bool* help_requested);
  std::string Usage() const;

 private:
  enum class Kind { kString, kRepeated, kInt, kInt64, kUint64, kDouble, kBool };
  struct Flag {
    std::string name;
    Kind kind;
    void* target;
    std::string help;
    std::string default_text;
  };
  void Add(const char* name, Kind kind, void* target, const char* help, std::string def);
  Status Set(const Flag& flag, const std::string& text);

  std::string program_;
  std::vector<Flag> flags_;
};

// "1,2, 3" -> {1, 2, 3}; empty items and non-numbers are errors naming `what`.
Status ParseIntList(const std::string& text, const std::string& what, std::vector<int>* out);
Status ParseDoubleList(const std::string& text, const std::string& what,
                       std::vector<double>* out);
std::vector<std::string> SplitList(const std::string& text);

}  // namespace tools
}  // namespace vlcache
