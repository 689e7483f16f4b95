// The KV cache of one sequence: for every (layer, kv head) a list of pool
// blocks, the number of entries held, and each entry's original prompt
// position (for stats; attention itself only needs the order). Model code goes
// through these accessors and never computes offsets into the pool.
#pragma once

#include <cstdint>
#include <vector>

#include "kvcache/block_pool.h"
#include "vlcache/kernels/ops.h"

namespace vlcache {
namespace kvcache {

class SequenceCache {
 public:
  SequenceCache(BlockPool* pool, int num_layers, int num_kv_heads);
  ~SequenceCache();
  SequenceCache(const SequenceCache&) = delete;
  SequenceCache& operator=(const SequenceCache&) = delete;

  int num_layers() const { return num_layers_; }
  int num_kv_heads() const { return num_kv_heads_; }
  BlockPool* pool() const { return pool_; }

  // Blocks needed so that every kv head of layer l can hold tokens[l] entries.
  static int64_t BlocksFor(const std::vector<int>& tokens_per_layer, int num_kv_heads,
                           int block_tokens);
  // Grows every (layer, kv head) of layer l to room for tokens[l] entries in
  // total, taking all blocks at once or none (false: the pool is short).
  bool Reserve(const std::vector<int>& tokens_per_layer);

  // Appends one entry; false when the reserved room is used up.
  bool Append(int layer, int kv_head, const float* key, const float* value, int32_t position);

  // Keeps only the entries at the given cache indices (ascending), in order,
  // and returns the blocks no longer needed to the pool at once. The room
  // reserved beyond the held entries (for tokens still to come) is kept.
  void Compact(int layer, int kv_head, const std::vector<int32_t>& keep_indices);

  // Returns every block to the pool.
  void Release();

  int Length(int layer, int kv_head) const { return Slot(layer, kv_head).length; }
  int Capacity(int layer, int kv_head) const;
  int32_t Position(int layer, int kv_head, int index) const {
    return Slot(layer, kv_head).positions[index];
  }
  const std::vector<int32_t>& Positions(int layer, int kv_head) const {
    return Slot(layer, kv_head).positions;
  }
  const float* Key(int layer, int kv_head, int index) const;
  const float* Value(int layer, int kv_head, int index) const;
  kernels::PagedKvView View(int layer, int kv_head) const;
  int64_t BlocksHeld() const;
  int64_t EntriesHeld() const;

  // RoPE position of the next token: the prompt length after prefill, not the
  // (compressed) cache length.
  int32_t next_position() const { return next_position_; }
  void set_next_position(int32_t p) { next_position_ = p; }

 private:
  struct HeadSlot {
    std::vector<int32_t> blocks;
    std::vector<int32_t> positions;
    int length = 0;
  };
  HeadSlot& Slot(int l, int h) { return slots_[static_cast<size_t>(l) * num_kv_heads_ + h]; }
  const HeadSlot& Slot(int l, int h) const {
    return slots_[static_cast<size_t>(l) * num_kv_heads_ + h];
  }

  BlockPool* pool_;
  int num_layers_;
  int num_kv_heads_;
  int32_t next_position_ = 0;
  std::vector<HeadSlot> slots_;
};

}  // namespace kvcache
}  // namespace vlcache
