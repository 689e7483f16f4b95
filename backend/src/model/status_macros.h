// Early return on a failed Status, for code that chains fallible steps.
#pragma once

#include "engine/engine.h"

#define VLCACHE_RETURN_IF_ERROR(expr)       \
  do {                                      \
    ::vlcache::Status _status = (expr);     \
    if (!_status.ok()) return _status;      \
  } while (0)
