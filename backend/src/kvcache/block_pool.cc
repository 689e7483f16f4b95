#include "kvcache/block_pool.h"

#include <algorithm>

namespace vlcache {
namespace kvcache {

BlockPool::BlockPool(int64_t budget_bytes, int block_tokens, int head_dim)
    : block_tokens_(block_tokens),
      head_dim_(head_dim),
      block_floats_(2ll * block_tokens * head_dim) {
  capacity_ = block_floats_ > 0 ? std::max<int64_t>(0, budget_bytes / BlockBytes()) : 0;
  // new float[] leaves the memory uninitialised, so untouched blocks cost no
  // resident memory.
  arena_.reset(new float[static_cast<size_t>(std::max<int64_t>(1, capacity_ * block_floats_))]);
  free_.reserve(static_cast<size_t>(capacity_));
  // Hand out low block ids first (pop from the back).
  for (int64_t b = capacity_ - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

int64_t BlockPool::FreeBlocks() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(free_.size());
}

bool BlockPool::Allocate(int64_t n, std::vector<int32_t>* out) {
  std::lock_guard<std::mutex> lock(mu_);
  if (n > static_cast<int64_t>(free_.size())) return false;
  for (int64_t i = 0; i < n; ++i) {
    out->push_back(free_.back());
    free_.pop_back();
  }
  return true;
}

void BlockPool::Free(const int32_t* ids, int64_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  free_.insert(free_.end(), ids, ids + n);
}

kernels::PagedPool BlockPool::View() const {
  kernels::PagedPool p;
  p.base = arena_.get();
  p.block_floats = block_floats_;
  p.block_tokens = block_tokens_;
  p.head_dim = head_dim_;
  return p;
}

}  // namespace kvcache
}  // namespace vlcache
