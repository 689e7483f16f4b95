#include "kvcache/sequence_cache.h"

#include <algorithm>
#include <cstring>

namespace vlcache {
namespace kvcache {

SequenceCache::SequenceCache(BlockPool* pool, int num_layers, int num_kv_heads)
    : pool_(pool),
      num_layers_(num_layers),
      num_kv_heads_(num_kv_heads),
      slots_(static_cast<size_t>(num_layers) * num_kv_heads) {}

SequenceCache::~SequenceCache() { Release(); }

int64_t SequenceCache::BlocksFor(const std::vector<int>& tokens_per_layer, int num_kv_heads,
                                 int block_tokens) {
  int64_t blocks = 0;
  for (int t : tokens_per_layer) {
    blocks += static_cast<int64_t>(num_kv_heads) * ((std::max(0, t) + block_tokens - 1) / block_tokens);
  }
  return blocks;
}

bool SequenceCache::Reserve(const std::vector<int>& tokens_per_layer) {
  const int bt = pool_->block_tokens();
  int64_t need = 0;
  for (int l = 0; l < num_layers_; ++l) {
    const int want = (std::max(0, tokens_per_layer[l]) + bt - 1) / bt;
    for (int h = 0; h < num_kv_heads_; ++h) {
      need += std::max<int64_t>(0, want - static_cast<int64_t>(Slot(l, h).blocks.size()));
    }
  }
  std::vector<int32_t> got;
  got.reserve(static_cast<size_t>(need));
  if (!pool_->Allocate(need, &got)) return false;
  size_t next = 0;
  for (int l = 0; l < num_layers_; ++l) {
    const int want = (std::max(0, tokens_per_layer[l]) + bt - 1) / bt;
    for (int h = 0; h < num_kv_heads_; ++h) {
      HeadSlot& s = Slot(l, h);
      while (static_cast<int>(s.blocks.size()) < want) s.blocks.push_back(got[next++]);
      s.positions.reserve(static_cast<size_t>(want) * bt);
    }
  }
  return true;
}

int SequenceCache::Capacity(int layer, int kv_head) const {
  return static_cast<int>(Slot(layer, kv_head).blocks.size()) * pool_->block_tokens();
}

bool SequenceCache::Append(int layer, int kv_head, const float* key, const float* value,
                           int32_t position) {
  HeadSlot& s = Slot(layer, kv_head);
  const int bt = pool_->block_tokens();
  if (s.length >= static_cast<int>(s.blocks.size()) * bt) return false;
  const int32_t block = s.blocks[s.length / bt];
  const int d = pool_->head_dim();
  std::memcpy(pool_->KeySlot(block, s.length % bt), key, sizeof(float) * d);
  std::memcpy(pool_->ValueSlot(block, s.length % bt), value, sizeof(float) * d);
  s.positions.push_back(position);
  ++s.length;
  return true;
}

void SequenceCache::Compact(int layer, int kv_head, const std::vector<int32_t>& keep_indices) {
  HeadSlot& s = Slot(layer, kv_head);
  const int bt = pool_->block_tokens();
  const int d = pool_->head_dim();
  const int room = static_cast<int>(s.blocks.size()) * bt - s.length;
  int out = 0;
  for (int32_t src : keep_indices) {
    if (src < 0 || src >= s.length || src < out) continue;  // ascending, in range
    if (src != out) {
      std::memmove(pool_->KeySlot(s.blocks[out / bt], out % bt),
                   pool_->KeySlot(s.blocks[src / bt], src % bt), sizeof(float) * d);
      std::memmove(pool_->ValueSlot(s.blocks[out / bt], out % bt),
                   pool_->ValueSlot(s.blocks[src / bt], src % bt), sizeof(float) * d);
      s.positions[out] = s.positions[src];
    }
    ++out;
  }
  s.length = out;
  s.positions.resize(out);
  const size_t keep_blocks = static_cast<size_t>((out + room + bt - 1) / bt);
  if (keep_blocks < s.blocks.size()) {
    pool_->Free(s.blocks.data() + keep_blocks, static_cast<int64_t>(s.blocks.size() - keep_blocks));
    s.blocks.resize(keep_blocks);
  }
}

void SequenceCache::Release() {
  for (HeadSlot& s : slots_) {
    if (!s.blocks.empty()) pool_->Free(s.blocks.data(), static_cast<int64_t>(s.blocks.size()));
    s.blocks.clear();
    s.positions.clear();
    s.length = 0;
  }
}

const float* SequenceCache::Key(int layer, int kv_head, int index) const {
  const HeadSlot& s = Slot(layer, kv_head);
  const int bt = pool_->block_tokens();
  return pool_->KeySlot(s.blocks[index / bt], index % bt);
}

const float* SequenceCache::Value(int layer, int kv_head, int index) const {
  const HeadSlot& s = Slot(layer, kv_head);
  const int bt = pool_->block_tokens();
  return pool_->ValueSlot(s.blocks[index / bt], index % bt);
}

kernels::PagedKvView SequenceCache::View(int layer, int kv_head) const {
  const HeadSlot& s = Slot(layer, kv_head);
  kernels::PagedKvView v;
  v.block_ids = s.blocks.data();
  v.length = s.length;
  return v;
}

int64_t SequenceCache::BlocksHeld() const {
  int64_t n = 0;
  for (const HeadSlot& s : slots_) n += static_cast<int64_t>(s.blocks.size());
  return n;
}

int64_t SequenceCache::EntriesHeld() const {
  int64_t n = 0;
  for (const HeadSlot& s : slots_) n += s.length;
  return n;
}

}  // namespace kvcache
}  // namespace vlcache
