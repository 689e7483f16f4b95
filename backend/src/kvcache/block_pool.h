// The shared KV block pool: one arena of equal blocks under an explicit byte
// budget. A block holds block_tokens entries (float32 K then V) of ONE
// (sequence, layer, kv head), so a sequence's layers and heads can keep
// different numbers of tokens and give blocks back independently.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "vlcache/kernels/ops.h"

namespace vlcache {
namespace kvcache {

class BlockPool {
 public:
  // Capacity is floor(budget_bytes / BlockBytes()) blocks. The arena is
  // reserved up front but pages are only touched when blocks are written.
  BlockPool(int64_t budget_bytes, int block_tokens, int head_dim);

  int block_tokens() const { return block_tokens_; }
  int head_dim() const { return head_dim_; }
  int64_t BlockBytes() const { return block_floats_ * static_cast<int64_t>(sizeof(float)); }
  int64_t capacity_blocks() const { return capacity_; }
  int64_t CapacityBytes() const { return capacity_ * BlockBytes(); }
  int64_t FreeBlocks() const;
  int64_t FreeBytes() const { return FreeBlocks() * BlockBytes(); }

  // Takes n blocks (all or none); false when fewer than n are free.
  bool Allocate(int64_t n, std::vector<int32_t>* out);
  void Free(const int32_t* ids, int64_t n);

  float* KeySlot(int32_t block, int slot) {
    return arena_.get() + block * block_floats_ + static_cast<int64_t>(slot) * head_dim_;
  }
  float* ValueSlot(int32_t block, int slot) {
    return arena_.get() + block * block_floats_ +
           static_cast<int64_t>(block_tokens_ + slot) * head_dim_;
  }
  kernels::PagedPool View() const;

 private:
  int block_tokens_;
  int head_dim_;
  int64_t block_floats_;
  int64_t capacity_;
  std::unique_ptr<float[]> arena_;
  mutable std::mutex mu_;  // Metrics() reads the free count from other threads
  std::vector<int32_t> free_;
};

}  // namespace kvcache
}  // namespace vlcache
