// The block pool and the per-sequence cache: all-or-nothing reservation,
// entries across block boundaries, compaction returning exactly the evicted
// blocks, release.
#include <gtest/gtest.h>

#include "kvcache/block_pool.h"
#include "kvcache/sequence_cache.h"

namespace vlcache {
namespace kvcache {
namespace {

constexpr int kHeadDim = 4;
constexpr int kBlockTokens = 16;

std::vector<float> Entry(int seed) {
  std::vector<float> v(kHeadDim);
  for (int i = 0; i < kHeadDim; ++i) v[i] = static_cast<float>(seed * 10 + i);
  return v;
}

TEST(BlockPoolTest, BudgetAndAllOrNothingAllocation) {
  const int64_t block_bytes = 2 * kBlockTokens * kHeadDim * 4;
  BlockPool pool(10 * block_bytes + block_bytes / 2, kBlockTokens, kHeadDim);
  EXPECT_EQ(pool.BlockBytes(), block_bytes);
  EXPECT_EQ(pool.capacity_blocks(), 10);  // the half block does not count
  EXPECT_EQ(pool.FreeBytes(), pool.CapacityBytes());
  std::vector<int32_t> got;
  EXPECT_FALSE(pool.Allocate(11, &got));
  EXPECT_TRUE(got.empty());
  EXPECT_EQ(pool.FreeBlocks(), 10);
  ASSERT_TRUE(pool.Allocate(4, &got));
  EXPECT_EQ(pool.FreeBlocks(), 6);
  pool.Free(got.data(), 4);
  EXPECT_EQ(pool.FreeBlocks(), 10);
}

TEST(SequenceCacheTest, ReserveAppendReadAcrossBlocks) {
  BlockPool pool(1 << 20, kBlockTokens, kHeadDim);
  const int64_t capacity = pool.FreeBlocks();
  {
    SequenceCache cache(&pool, 2, 3);
    // Layer 0 keeps 40 tokens (3 blocks, 48 slots per head), layer 1 keeps 5 (1 block).
    ASSERT_TRUE(cache.Reserve({40, 5}));
    EXPECT_EQ(cache.Capacity(0, 2), 48);
    EXPECT_EQ(cache.BlocksHeld(), 3 * 3 + 3 * 1);
    EXPECT_EQ(pool.FreeBlocks(), capacity - 12);
    for (int i = 0; i < 48; ++i) {
      const std::vector<float> k = Entry(i), v = Entry(1000 + i);
      ASSERT_TRUE(cache.Append(0, 2, k.data(), v.data(), 100 + i));
    }
    EXPECT_FALSE(cache.Append(0, 2, Entry(0).data(), Entry(0).data(), 0));  // room used up
    for (int i = 0; i < 48; ++i) {
      EXPECT_EQ(cache.Key(0, 2, i)[3], static_cast<float>(i * 10 + 3));
      EXPECT_EQ(cache.Value(0, 2, i)[0], static_cast<float>((1000 + i) * 10));
      EXPECT_EQ(cache.Position(0, 2, i), 100 + i);
    }
    EXPECT_EQ(cache.Length(0, 2), 48);
    EXPECT_EQ(cache.Length(0, 1), 0);
    EXPECT_EQ(cache.View(0, 2).length, 48);
    EXPECT_EQ(cache.EntriesHeld(), 48);
  }
  EXPECT_EQ(pool.FreeBlocks(), capacity);  // the destructor gives everything back
}

TEST(SequenceCacheTest, ReserveIsAllOrNothing) {
  const int64_t block_bytes = 2 * kBlockTokens * kHeadDim * 4;
  BlockPool pool(5 * block_bytes, kBlockTokens, kHeadDim);
  SequenceCache cache(&pool, 2, 2);
  EXPECT_FALSE(cache.Reserve({33, 1}));  // 3 + 3 + 1 + 1 blocks > 5
  EXPECT_EQ(pool.FreeBlocks(), 5);
  EXPECT_EQ(cache.BlocksHeld(), 0);
  EXPECT_EQ(SequenceCache::BlocksFor({33, 1}, 2, kBlockTokens), 8);
  EXPECT_TRUE(cache.Reserve({16, 16}));
  EXPECT_EQ(pool.FreeBlocks(), 1);
}

TEST(SequenceCacheTest, CompactReturnsExactlyTheEvictedBlocks) {
  BlockPool pool(1 << 20, kBlockTokens, kHeadDim);
  SequenceCache cache(&pool, 1, 2);
  ASSERT_TRUE(cache.Reserve({64}));  // 4 blocks per head
  for (int h = 0; h < 2; ++h) {
    for (int i = 0; i < 64; ++i) {
      ASSERT_TRUE(cache.Append(0, h, Entry(i).data(), Entry(500 + i).data(), i));
    }
  }
  const int64_t before = pool.FreeBytes();
  // Head 0 keeps 10 of 64 entries: 1 block instead of 4.
  std::vector<int32_t> keep = {0, 1, 2, 3, 20, 33, 47, 50, 62, 63};
  cache.Compact(0, 0, keep);
  EXPECT_EQ(pool.FreeBytes() - before, 3 * pool.BlockBytes());
  ASSERT_EQ(cache.Length(0, 0), 10);
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(cache.Position(0, 0, i), keep[i]);
    EXPECT_EQ(cache.Key(0, 0, i)[1], static_cast<float>(keep[i] * 10 + 1));
    EXPECT_EQ(cache.Value(0, 0, i)[2], static_cast<float>((500 + keep[i]) * 10 + 2));
  }
  EXPECT_EQ(cache.Length(0, 1), 64);  // the other head is untouched
  // Room reserved for later tokens survives compaction: 70 reserved is 5
  // blocks (80 slots); with 64 held the room is 16, so after keeping 20 the
  // head needs ceil(36 / 16) = 3 blocks and gives 2 back.
  SequenceCache other(&pool, 1, 1);
  ASSERT_TRUE(other.Reserve({70}));
  for (int i = 0; i < 64; ++i) ASSERT_TRUE(other.Append(0, 0, Entry(i).data(), Entry(i).data(), i));
  std::vector<int32_t> keep20;
  for (int i = 0; i < 20; ++i) keep20.push_back(i * 3);
  const int64_t before_other = pool.FreeBlocks();
  other.Compact(0, 0, keep20);
  EXPECT_EQ(pool.FreeBlocks() - before_other, 2);
  EXPECT_EQ(other.Capacity(0, 0), 3 * kBlockTokens);
  for (int i = 0; i < 16; ++i) EXPECT_TRUE(other.Append(0, 0, Entry(0).data(), Entry(0).data(), 64 + i));
}

}  // namespace
}  // namespace kvcache
}  // namespace vlcache
