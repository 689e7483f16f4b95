#include "flags.h"

#include <cerrno>
#include <cstdlib>
#include <sstream>

namespace vlcache {
namespace tools {
namespace {

Status ParseWhole(const std::string& text, const std::string& what, long long* out) {
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || end != text.c_str() + text.size() || errno == ERANGE) {
    return Status::Error(what + ": not an integer: \"" + text + "\"");
  }
  *out = v;
  return Status::Ok();
}

Status ParseReal(const std::string& text, const std::string& what, double* out) {
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || end != text.c_str() + text.size() || errno == ERANGE) {
    return Status::Error(what + ": not a number: \"" + text + "\"");
  }
  *out = v;
  return Status::Ok();
}

std::string Trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  const size_t e = s.find_last_not_of(" \t");
  return s.substr(b, e - b + 1);
}

}  // namespace

void FlagSet::Add(const char* name, Kind kind, void* target, const char* help, std::string def) {
  flags_.push_back(Flag{name, kind, target, help, std::move(def)});
}

void FlagSet::String(const char* name, std::string* value, const char* help) {
  Add(name, Kind::kString, value, help, *value);
}
void FlagSet::Repeated(const char* name, std::vector<std::string>* values, const char* help) {
  Add(name, Kind::kRepeated, values, help, "");
}
void FlagSet::Int(const char* name, int* value, const char* help) {
  Add(name, Kind::kInt, value, help, std::to_string(*value));
}
void FlagSet::Int64(const char* name, int64_t* value, const char* help) {
  Add(name, Kind::kInt64, value, help, std::to_string(*value));
}
void FlagSet::Uint64(const char* name, uint64_t* value, const char* help) {
  Add(name, Kind::kUint64, value, help, std::to_string(*value));
}
void FlagSet::Double(const char* name, double* value, const char* help) {
  std::ostringstream def;
  def << *value;
  Add(name, Kind::kDouble, value, help, def.str());
}
void FlagSet::Bool(const char* name, bool* value, const char* help) {
  Add(name, Kind::kBool, value, help, *value ? "true" : "false");
}

Status FlagSet::Set(const Flag& flag, const std::string& text) {
  const std::string what = "--" + flag.name;
  long long whole = 0;
  switch (flag.kind) {
    case Kind::kString:
      *static_cast<std::string*>(flag.target) = text;
      return Status::Ok();
    case Kind::kRepeated:
      static_cast<std::vector<std::string>*>(flag.target)->push_back(text);
      return Status::Ok();
    case Kind::kInt: {
      Status s = ParseWhole(text, what, &whole);
      if (!s.ok()) return s;
      if (whole < INT32_MIN || whole > INT32_MAX) return Status::Error(what + ": out of range");
      *static_cast<int*>(flag.target) = static_cast<int>(whole);
      return Status::Ok();
    }
    case Kind::kInt64: {
      Status s = ParseWhole(text, what, &whole);
      if (!s.ok()) return s;
      *static_cast<int64_t*>(flag.target) = whole;
      return Status::Ok();
    }
    case Kind::kUint64: {
      Status s = ParseWhole(text, what, &whole);
      if (!s.ok()) return s;
      if (whole < 0) return Status::Error(what + ": must not be negative");
      *static_cast<uint64_t*>(flag.target) = static_cast<uint64_t>(whole);
      return Status::Ok();
    }
    case Kind::kDouble:
      return ParseReal(text, what, static_cast<double*>(flag.target));
    case Kind::kBool:
      if (text == "true" || text == "1") {
        *static_cast<bool*>(flag.target) = true;
      } else if (text == "false" || text == "0") {
        *static_cast<bool*>(flag.target) = false;
      } else {
        return Status::Error(what + ": expected true or false, got \"" + text + "\"");
      }
      return Status::Ok();
  }
  return Status::Error(what + ": unhandled flag kind");
}

Status FlagSet::Parse(int argc, char** argv, bool* help_requested) {
  *help_requested = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      *help_requested = true;
      return Status::Ok();
    }
    if (arg.rfind("--", 0) != 0) return Status::Error("unexpected argument \"" + arg + "\"");
    std::string name = arg.substr(2), value;
    bool has_value = false;
    const size_t eq = name.find('=');
    if (eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    const Flag* flag = nullptr;
    for (const Flag& f : flags_) {
      if (f.name == name) flag = &f;
    }
    if (flag == nullptr) return Status::Error("unknown flag --" + name + " (see --help)");
    if (!has_value) {
      if (flag->kind == Kind::kBool) {
        value = "true";
      } else if (i + 1 < argc) {
        value = argv[++i];
      } else {
        return Status::Error("--" + name + " needs a value");
      }
    }
    Status s = Set(*flag, value);
    if (!s.ok()) return s;
  }
  return Status::Ok();
}

std::string FlagSet::Usage() const {
  std::ostringstream out;
  out << "usage: " << program_ << " [flags]\n";
  for (const Flag& f : flags_) {
    out << "  --" << f.name;
    if (f.kind != Kind::kBool) out << " VALUE";
    out << "\n      " << f.help;
    if (!f.default_text.empty()) out << " (default " << f.default_text << ")";
    out << "\n";
  }
  return out.str();
}

std::vector<std::string> SplitList(const std::string& text) {
  std::vector<std::string> items;
  std::string item;
  std::istringstream in(text);
  while (std::getline(in, item, ',')) items.push_back(Trim(item));
  return items;
}

Status ParseIntList(const std::string& text, const std::string& what, std::vector<int>* out) {
  out->clear();
  for (const std::string& item : SplitList(text)) {
    long long v = 0;
    Status s = ParseWhole(item, what, &v);
    if (!s.ok()) return s;
    if (v < INT32_MIN || v > INT32_MAX) return Status::Error(what + ": out of range: " + item);
    out->push_back(static_cast<int>(v));
  }
  if (out->empty()) return Status::Error(what + ": empty list");
  return Status::Ok();
}

Status ParseDoubleList(const std::string& text, const std::string& what,
                       std::vector<double>* out) {
  out->clear();
  for (const std::string& item : SplitList(text)) {
    double v = 0;
    Status s = ParseReal(item, what, &v);
    if (!s.ok()) return s;
    out->push_back(v);
  }
  if (out->empty()) return Status::Error(what + ": empty list");
  return Status::Ok();
}

}  // namespace tools
}  // namespace vlcache
