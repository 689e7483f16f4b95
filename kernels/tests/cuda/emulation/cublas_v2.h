// Routes the cuBLAS header to the CPU emulation (run.sh only).
#include "cudasim.h"
