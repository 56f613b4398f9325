// The KV metadata of one replica (DESIGN.md §6): its block pool, the block table of every
// sequence it runs, and its prefix registry, kept consistent with each other.
//
// Block states (disjoint; free + used + cached = total):
//   used    ref count >= 1: in the table of at least one sequence (shared prefix blocks count once)
//   cached  ref count 0 and registered: holds valid KV for a known hash; reusable until evicted
//   free    ref count 0 and unregistered
// Cached and free blocks share the pool's free list, whose order is the eviction order:
// unregistered blocks first, then cached blocks least recently released first, a sequence's
// blocks released last block first (so a chain loses its tail before its head). Allocating a
// block takes the list head and, when that block was cached, erases its registry entry (an
// eviction).
//
// Sharing: AttachCachedPrefix acquires the registered blocks of a sequence's hash chain, so the
// sequence starts with those positions already in the cache. Only full blocks whose KV has been
// computed are ever registered (RegisterFullBlocks), and a sequence never writes into a block it
// did not allocate itself, so a shared block is immutable.
//
// Not thread-safe: the scheduler thread owns it.
#pragma once

#include <cstdint>
#include <span>
#include <unordered_map>

#include "cache/block_hash.h"
#include "cache/block_pool.h"
#include "cache/block_table.h"
#include "cache/prefix_registry.h"
#include "core/status.h"

namespace bitfleet::cache {

struct BlockCounts {
  int32_t total = 0;
  int32_t used = 0;
  int32_t cached = 0;
  int32_t free = 0;
};

// What attaching a cached prefix would take (see PlanCachedPrefix).
struct CachedPrefix {
  int32_t blocks = 0;   // leading blocks of the chain found in the registry (after the cap)
  int32_t revived = 0;  // of those, how many are cached (ref 0) and leave the free list
};

class BlockManager {
 public:
  BlockManager(int32_t num_blocks, int32_t block_size);

  int32_t num_blocks() const { return pool_.num_blocks(); }
  int32_t block_size() const { return block_size_; }
  // Blocks an allocation can take right now: free plus cached (cached ones get evicted).
  int32_t num_allocatable() const { return pool_.num_free(); }
  // O(1): the scheduler reads it on every iteration, and a pool sized by GPU memory holds
  // hundreds of thousands of blocks.
  BlockCounts Counts() const;
  // Cached blocks reallocated for new content since construction (Reset keeps the count).
  int64_t evictions() const { return evictions_; }

  // Leading blocks of `chain` this replica holds (used or cached): what the router asks.
  int32_t CachedPrefixBlocks(std::span<const BlockHash> chain) const { return registry_.CountPrefix(chain); }
  // The prefix AttachCachedPrefix would attach, capped at `max_blocks`.
  CachedPrefix PlanCachedPrefix(std::span<const BlockHash> chain, int32_t max_blocks) const;

  bool HasSequence(uint64_t seq) const { return tables_.contains(seq); }
  // The block table of `seq` (empty for an unknown sequence).
  std::span<const int32_t> Table(uint64_t seq) const;

  // Starts the table of a new sequence `seq` with the registered blocks of the longest cached
  // prefix of `chain` (at most `max_blocks`), each acquired (ref count +1). Returns the number
  // of blocks attached (0: an empty table). FAILED_PRECONDITION when `seq` already has a table.
  StatusOr<int32_t> AttachCachedPrefix(uint64_t seq, std::span<const BlockHash> chain, int32_t max_blocks);
  // Blocks Grow(seq, n_tokens) would allocate.
  int32_t BlocksNeeded(uint64_t seq, int64_t n_tokens) const;
  // Grows the table of `seq` (created empty if new) to hold `n_tokens` positions, all or
  // nothing: RESOURCE_EXHAUSTED leaves everything unchanged.
  Status Grow(uint64_t seq, int64_t n_tokens);
  // Registers table block i under chain[i] for every i < chain.size() not registered yet. The
  // caller guarantees those blocks are full and their KV computed. A hash that already names
  // another block leaves this block private (two sequences computed the same content at once).
  Status RegisterFullBlocks(uint64_t seq, std::span<const BlockHash> chain);
  // Drops the sequence: releases its blocks (registered ones become cached) and its table.
  Status Free(uint64_t seq);

  // Forgets every sequence and every cached block (the replica's KV storage was lost).
  void Reset();

  // Checks: every pool ref count equals the number of table entries naming the block (so none
  // is negative or leaked), Counts() equals a count block by block, free + used + cached =
  // total and matches the pool's free count, and the registry is a consistent bijection.
  // INTERNAL naming the first violation.
  Status CheckInvariants() const;

 private:
  struct SequenceBlocks {
    explicit SequenceBlocks(int block_size) : table(block_size) {}
    BlockTable table;
    int32_t registered = 0;  // leading table blocks RegisterFullBlocks has handled
  };

  // Counts() the slow way, block by block (CheckInvariants compares the two).
  BlockCounts CountBlockByBlock() const;

  int32_t block_size_;
  BlockPool pool_;
  PrefixRegistry registry_;
  std::unordered_map<uint64_t, SequenceBlocks> tables_;
  int64_t evictions_ = 0;
  // Registered blocks with ref count 0, kept up to date by every change of a block's state.
  int32_t num_cached_ = 0;
};

}  // namespace bitfleet::cache
