// Routes the CUDA runtime header to the CPU emulation (run.sh only).
#include "cudasim.h"
