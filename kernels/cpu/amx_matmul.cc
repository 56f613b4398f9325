// AMX matmul kernels for batches (compiled with the AVX-512 VNNI flags plus -mamx-tile
// -mamx-int8). Only intrinsics and internal-linkage helpers: see the note in
// kernels/cpu/kernel_table.h. The `amx` variant is `avx512vnni` with these batch paths; one
// token (decode) and small batches keep the VNNI kernels, which stream the weights at memory
// speed already.
//
// tdpbusd multiplies a 16 × 64 u8 tile A by a 64 × 16 s8 tile B (stored as 16 rows of 16 × 4
// bytes) into a 16 × 16 int32 tile C: 16384 multiply-adds per instruction, ~16x a 512-bit
// vpdpbusd. Here A is the weight codes (rows × 64 columns, unpacked to one byte per weight),
// B the activations (the tile copy QuantizedActivations keeps, 16 tokens per tile), and C the
// rows × tokens integer sums. Tiles: tmm0-3 accumulate 32 rows × 32 tokens, tmm4-5 hold A for
// rows 0-15 / 16-31, tmm6-7 B for tokens 0-15 / 16-31.
#include <immintrin.h>

#include "kernels/cpu/avx512_transpose.h"
#include "kernels/cpu/variant_fns.h"

namespace bitfleet::kernels::cpu::amx {
namespace {

constexpr int kTileBytes = 1024;  // 16 rows × 64 bytes

// The LDTILECFG operand (Intel SDM, "TILECFG"): palette 1, per tile its rows and bytes per row.
struct alignas(64) TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

// LDTILECFG of `cfg`. GCC 12 does not treat the instruction as reading its 64 bytes: inlined
// into a larger function it moved the stores of `colsb` after it (the tiles were then configured
// 0 bytes wide and the next tile instruction faulted). The barrier keeps every store before it.
inline void LoadTileConfig(const TileConfig& cfg) {
  asm volatile("" : : "r"(&cfg) : "memory");
  _tile_loadconfig(&cfg);
}

// All eight tiles 16 rows × 64 bytes.
inline void ConfigureFullTiles() {
  TileConfig cfg;
  __builtin_memset(&cfg, 0, sizeof(cfg));
  cfg.palette_id = 1;
  for (int i = 0; i < 8; ++i) {
    cfg.rows[i] = 16;
    cfg.colsb[i] = 64;
  }
  LoadTileConfig(cfg);
}

inline __mmask16 FirstN(int n) { return n >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << n) - 1); }

// ---- ternary rows with one scale per row ----
//
// y[t, r] = s_r * (absmax_t / 127) * (sum_c c_rc q_tc - sum_c q_tc): codes are w + 1, so the
// integer sum over the whole row, minus the token's activation sum, is exactly sum w q.

// Row stride of an unpacked block: the row length plus one cache line, so the 16 rows a tile
// load reads do not all map to the same L1 set when the row length is a multiple of 4 KiB.
inline uint64_t UnpackedStride(uint64_t k_bytes) { return k_bytes + 64; }

// Unpacks rows [rb, rb + nr) of 2-bit codes into one byte per weight: `dst` row i at i * ld.
// Rows nr .. 31 become zero (their sums are computed and dropped).
inline void UnpackTernaryRows(const WeightView& w, int64_t rb, int nr, uint64_t k_bytes, uint64_t ld, uint8_t* dst) {
  const __m512i mask = _mm512_set1_epi8(3);
  for (int i = 0; i < 32; ++i) {
    uint8_t* d = dst + i * ld;
    if (i >= nr) {
      for (uint64_t c = 0; c < k_bytes; c += 64) _mm512_store_si512(d + c, _mm512_setzero_si512());
      continue;
    }
    const uint8_t* src = w.data + (rb + i) * w.row_bytes;
    for (uint64_t b = 0; b < w.blocks; ++b) {
      // The next row block's codes, into L2 only: in L1 they would be evicted by the unpacked
      // tiles and activations before use (measured, 16-token batches, two threads: ternary
      // 2048x1024 70 -> 63 µs, Q8_0 32000x1024 2.52 -> 2.25-2.37 ms).
      _mm_prefetch(reinterpret_cast<const char*>(src + 32 * w.row_bytes + b * 64), _MM_HINT_T1);
      const __m512i v = _mm512_load_si512(src + b * 64);
      _mm512_store_si512(d + b * 256, _mm512_and_si512(v, mask));
      _mm512_store_si512(d + b * 256 + 64, _mm512_and_si512(_mm512_srli_epi16(v, 2), mask));
      _mm512_store_si512(d + b * 256 + 128, _mm512_and_si512(_mm512_srli_epi16(v, 4), mask));
      _mm512_store_si512(d + b * 256 + 192, _mm512_and_si512(_mm512_srli_epi16(v, 6), mask));
    }
  }
}

// The tokens' dequantization steps absmax / 127 into `steps` (n_tokens floats), once per call
// rather than per tile (a division per token and tile was a tenth of the epilogue).
inline void TokenSteps(const ActView& x, float* steps) {
  for (int t = 0; t < x.n_tokens; ++t) steps[t] = x.absmax[t] / 127.0f;
}

// The epilogue of one C tile (16 rows from `row0` × 16 tokens from `t0`, int32 row-major in
// `c`): transposed to tokens × rows, then scaled and stored for the rows and tokens that exist.
// `steps`: TokenSteps.
inline void StoreTernaryTile(const int32_t* c, const WeightView& w, int64_t row0, int rows_left, const ActView& x,
                             const float* steps, int t0, float* out) {
  if (rows_left <= 0) return;
  __m512i v[16];
  for (int i = 0; i < 16; ++i) v[i] = _mm512_load_si512(c + 16 * i);
  Transpose16(v);
  const __mmask16 m = FirstN(rows_left);
  const __m512 s = _mm512_maskz_loadu_ps(m, w.row_scales + row0);
  const int tokens = x.n_tokens - t0 < 16 ? x.n_tokens - t0 : 16;
  for (int n = 0; n < tokens; ++n) {
    const int t = t0 + n;
    const __m512i d = _mm512_sub_epi32(v[n], _mm512_set1_epi32(x.token_sums[t]));
    const __m512 y = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(d), s), _mm512_set1_ps(steps[t]));
    _mm512_mask_storeu_ps(out + static_cast<int64_t>(t) * w.rows + row0, m, y);
  }
}

// The tile products of one 64-column chunk: A (rows 0-15 and 16-31 of the unpacked codes at a,
// row stride ld) times the activation tile at b0 into C tiles 0 and 2, and with
// kTwoTokenTiles the one at b1 into C tiles 1 and 3.
template <bool kTwoTokenTiles>
inline void TernaryChunkProducts(const uint8_t* a, uint64_t ld, const int8_t* b0, const int8_t* b1) {
  _tile_loadd(4, a, ld);
  _tile_loadd(5, a + 16 * ld, ld);
  _tile_stream_loadd(6, b0, 64);
  _tile_dpbusd(0, 4, 6);
  _tile_dpbusd(2, 5, 6);
  if (kTwoTokenTiles) {
    _tile_stream_loadd(7, b1, 64);
    _tile_dpbusd(1, 4, 7);
    _tile_dpbusd(3, 5, 7);
  }
}

// Epilogues one block late, in pieces between the next block's tile products (AmxTernaryUniform:
// between chunks; AmxTernarySmallBatch: between items). An epilogue is vector work (load, transpose, scale, store) that used to
// follow its block's products with the tile unit idle; issued after them instead, it still did
// not overlap, since the products' long-running tile instructions fill the out-of-order window.
// So a finished block's C tiles are saved into a slot, and its epilogue runs one 16 × 16 tile
// at a time, each between chunk products of the next block. Two slots alternate. The
// arithmetic per output is unchanged.
class DeferredTernaryEpilogues {
 public:
  DeferredTernaryEpilogues(const WeightView& w, const ActView& x, const float* steps, float* out)
      : w_(w), x_(x), steps_(steps), out_(out) {}
  ~DeferredTernaryEpilogues() { FinishAll(slots_[1 - next_]); }

  // The pending epilogue's next tile, if it has one left.
  void RunOneTile() {
    Slot& s = slots_[1 - next_];
    if (s.done < s.tiles) RunTile(s, s.done++);
  }

  // After the last products of the block (rows rb .., nr of them; tokens t0 ..): ends the
  // pending epilogue, then saves this block's C tiles as the next one.
  template <bool kTwoTokenTiles>
  void Defer(int64_t rb, int nr, int t0) {
    FinishAll(slots_[1 - next_]);
    Slot& s = slots_[next_];
    _tile_stored(0, s.c[0], 64);
    _tile_stored(2, s.c[1], 64);
    if (kTwoTokenTiles) {
      _tile_stored(1, s.c[2], 64);
      _tile_stored(3, s.c[3], 64);
    }
    s.rb = rb;
    s.nr = nr;
    s.t0 = t0;
    s.tiles = kTwoTokenTiles ? 4 : 2;
    s.done = 0;
    next_ = 1 - next_;
  }

 private:
  struct Slot {
    alignas(64) int32_t c[4][256];  // C tiles 0, 2, 1, 3: rows +0 / +16, then tokens +16
    int64_t rb = 0;
    int nr = 0;
    int t0 = 0;
    int tiles = 0;
    int done = 0;
  };

  void RunTile(const Slot& s, int i) {
    const int dr = 16 * (i & 1);
    StoreTernaryTile(s.c[i], w_, s.rb + dr, s.nr - dr, x_, steps_, s.t0 + 16 * (i >> 1), out_);
  }
  void FinishAll(Slot& s) {
    while (s.done < s.tiles) RunTile(s, s.done++);
  }

  const WeightView& w_;
  const ActView& x_;
  const float* steps_;
  float* out_;
  Slot slots_[2];
  int next_ = 0;
};

// Saved C tiles of one token-tile pair between K chunks (AmxTernaryUniform): tiles 0-3.
struct TernaryCState {
  alignas(64) int32_t c[4][256];
};

// One block of 32 rows (unpacked at `a`, row stride ld) against token tiles tt, tt + 1, over
// the 64-column chunks [kc_begin, kc_end) of the row. The C tiles start from zero on the
// row's first chunk (else from `state`) and end, on its last, in `epilogues` (else in `state`).
template <bool kTwoTokenTiles>
inline void TernaryRowBlock(const uint8_t* a, uint64_t k_bytes, uint64_t ld, int64_t rb, int nr, const ActView& x,
                            int tt, uint64_t kc_begin, uint64_t kc_end, TernaryCState* state,
                            DeferredTernaryEpilogues& epilogues) {
  const uint64_t n_kc = k_bytes / 64;
  const int8_t* b0 = x.tiles + static_cast<uint64_t>(tt) * n_kc * kTileBytes;
  const int8_t* b1 = b0 + n_kc * kTileBytes;
  if (kc_begin == 0) {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  } else {
    _tile_loadd(0, state->c[0], 64);
    _tile_loadd(2, state->c[2], 64);
    if (kTwoTokenTiles) {
      _tile_loadd(1, state->c[1], 64);
      _tile_loadd(3, state->c[3], 64);
    }
  }
  // The activation tiles load with the non-temporal hint (tileloaddt1): each is read once per
  // row block, and as ordinary loads they pushed the unpacked rows, which every token tile
  // pair reads again, out of L1 (32 rows × 1 KiB of codes plus two token tiles' 16 KiB:
  // 2048x1024 hot, one thread, 128 tokens 316 -> 231 µs, 16 tokens 79 -> 56 µs).
  // The pending epilogue's four tiles spread over the chunks (one after every quarter).
  const uint64_t every = (kc_end - kc_begin) / 4 > 0 ? (kc_end - kc_begin) / 4 : 1;
  for (uint64_t kc = kc_begin; kc < kc_end; ++kc) {
    TernaryChunkProducts<kTwoTokenTiles>(a + kc * 64, ld, b0 + kc * kTileBytes, b1 + kc * kTileBytes);
    if ((kc - kc_begin + 1) % every == 0) epilogues.RunOneTile();
  }
  if (kc_end < n_kc) {
    _tile_stored(0, state->c[0], 64);
    _tile_stored(2, state->c[2], 64);
    if (kTwoTokenTiles) {
      _tile_stored(1, state->c[1], 64);
      _tile_stored(3, state->c[3], 64);
    }
    return;
  }
  epilogues.Defer<kTwoTokenTiles>(rb, nr, 16 * tt);
}

// Columns per K chunk of a batch: the chunk's unpacked codes (32 rows × kChunkCols bytes) stay
// in L1 while every token tile pair passes over them; longer rows would be read back from L2
// for each pair.
constexpr uint64_t kChunkCols = 1024;

void AmxTernaryUniform(const WeightView& w, int64_t r0, int64_t r1, const ActView& x, float* out) {
  const uint64_t k_bytes = w.blocks * 256;  // == x.stride
  const uint64_t ld = UnpackedStride(k_bytes);
  const int n_tt = (x.n_tokens + kAmxTileTokens - 1) / kAmxTileTokens;
  const uint64_t n_kc = k_bytes / 64;
  const uint64_t chunk_kc = kChunkCols / 64;
  // The unpacked rows, then (rows longer than one K chunk) the C tiles of every token tile pair.
  const uint64_t n_pairs = static_cast<uint64_t>(n_tt + 1) / 2;
  const uint64_t a_bytes = (32 * ld + 63) / 64 * 64;
  const uint64_t state_bytes = n_kc > chunk_kc ? n_pairs * sizeof(TernaryCState) : 0;
  uint8_t* scratch = AmxScratch(a_bytes + state_bytes + static_cast<uint64_t>(x.n_tokens) * sizeof(float));
  uint8_t* a = scratch;
  TernaryCState* states = reinterpret_cast<TernaryCState*>(scratch + a_bytes);
  float* steps = reinterpret_cast<float*>(scratch + a_bytes + state_bytes);
  TokenSteps(x, steps);
  ConfigureFullTiles();
  {
    DeferredTernaryEpilogues epilogues(w, x, steps, out);  // the last epilogue runs at scope end
    for (int64_t rb = r0; rb < r1; rb += 32) {
      const int nr = r1 - rb < 32 ? static_cast<int>(r1 - rb) : 32;
      UnpackTernaryRows(w, rb, nr, k_bytes, ld, a);
      for (uint64_t kc0 = 0; kc0 < n_kc; kc0 += chunk_kc) {
        const uint64_t kc1 = kc0 + chunk_kc < n_kc ? kc0 + chunk_kc : n_kc;
        int tt = 0;
        for (; tt + 2 <= n_tt; tt += 2) {
          TernaryRowBlock<true>(a, k_bytes, ld, rb, nr, x, tt, kc0, kc1, states + tt / 2, epilogues);
        }
        if (tt < n_tt) TernaryRowBlock<false>(a, k_bytes, ld, rb, nr, x, tt, kc0, kc1, states + tt / 2, epilogues);
      }
    }
  }
  _tile_release();
}

// ---- ternary batches of one or two token tiles (decode steps of up to 32 sequences) ----
//
// Each unpacked byte feeds only one or two tile products here, so unpacking a whole row block
// before its products (AmxTernaryUniform) left the tile unit idle while the vector units
// unpacked, and the tile loads then waited behind the stores still in flight. Here the C tiles
// stay in tile registers for a whole row block and the work is a pipeline of items (32 rows ×
// one 256-column block): item i's products (four 64-column chunks) are issued, then item
// i + 1 is unpacked into the other half of a double buffer while the tile unit works, so every
// tile load reads bytes stored one item earlier. Measured (bench kernels, cold, two threads,
// 16 tokens): 2048x1024 62-64 -> 54-59 µs, 1024x2048 68-74 -> 53-58 µs; 32 tokens 1024x2048
// 89-94 -> 73-79 µs; `bench serve` c=16 +5%.
constexpr uint64_t kItemLd = 256;  // bytes per unpacked row of an item (one 256-block)

// Unpacks the 256-column block kb of rows [rb, rb + nr) into dst (row i at i * kItemLd);
// rows nr .. 31 become zero.
inline void UnpackTernaryItem(const WeightView& w, int64_t rb, int nr, uint64_t kb, uint8_t* dst) {
  const __m512i mask = _mm512_set1_epi8(3);
  for (int i = 0; i < 32; ++i) {
    uint8_t* d = dst + i * kItemLd;
    if (i >= nr) {
      for (int c = 0; c < 256; c += 64) _mm512_store_si512(d + c, _mm512_setzero_si512());
      continue;
    }
    const uint8_t* src = w.data + (rb + i) * w.row_bytes + kb * 64;
    // The next row block's codes, into L2 (see UnpackTernaryRows).
    _mm_prefetch(reinterpret_cast<const char*>(src + 32 * w.row_bytes), _MM_HINT_T1);
    const __m512i v = _mm512_load_si512(src);
    _mm512_store_si512(d, _mm512_and_si512(v, mask));
    _mm512_store_si512(d + 64, _mm512_and_si512(_mm512_srli_epi16(v, 2), mask));
    _mm512_store_si512(d + 128, _mm512_and_si512(_mm512_srli_epi16(v, 4), mask));
    _mm512_store_si512(d + 192, _mm512_and_si512(_mm512_srli_epi16(v, 6), mask));
  }
}

// Rows [r0, r1) × the batch's one (kTwoTokenTiles: two) token tiles.
template <bool kTwoTokenTiles>
void AmxTernarySmallBatch(const WeightView& w, int64_t r0, int64_t r1, const ActView& x, float* out) {
  const uint64_t n_kb = w.blocks;
  const uint64_t n_kc = n_kb * 4;
  const int8_t* b0 = x.tiles;
  const int8_t* b1 = b0 + n_kc * kTileBytes;
  uint8_t* buf = AmxScratch(2 * 32 * kItemLd + static_cast<uint64_t>(x.n_tokens) * sizeof(float));
  float* steps = reinterpret_cast<float*>(buf + 2 * 32 * kItemLd);
  TokenSteps(x, steps);
  ConfigureFullTiles();
  const int64_t items = (r1 - r0 + 31) / 32 * static_cast<int64_t>(n_kb);
  auto rows_of = [&](int64_t rb) { return r1 - rb < 32 ? static_cast<int>(r1 - rb) : 32; };
  UnpackTernaryItem(w, r0, rows_of(r0), 0, buf);
  {
    // A row block's epilogue runs during the next row block, one tile after each item's products.
    DeferredTernaryEpilogues epilogues(w, x, steps, out);
    for (int64_t i = 0; i < items; ++i) {
      const int64_t rb = r0 + i / static_cast<int64_t>(n_kb) * 32;
      const uint64_t kb = static_cast<uint64_t>(i) % n_kb;
      const uint8_t* a = buf + (i & 1) * 32 * kItemLd;
      if (kb == 0) {
        _tile_zero(0);
        _tile_zero(2);
        if (kTwoTokenTiles) {
          _tile_zero(1);
          _tile_zero(3);
        }
      }
      for (uint64_t j = 0; j < 4; ++j) {
        const uint64_t kc = kb * 4 + j;
        TernaryChunkProducts<kTwoTokenTiles>(a + j * 64, kItemLd, b0 + kc * kTileBytes, b1 + kc * kTileBytes);
      }
      epilogues.RunOneTile();
      if (i + 1 < items) {
        const int64_t next_rb = r0 + (i + 1) / static_cast<int64_t>(n_kb) * 32;
        UnpackTernaryItem(w, next_rb, rows_of(next_rb), static_cast<uint64_t>(i + 1) % n_kb,
                          buf + ((i + 1) & 1) * 32 * kItemLd);
      }
      if (kb + 1 == n_kb) epilogues.Defer<kTwoTokenTiles>(rb, rows_of(rb), 0);
    }
  }
  _tile_release();
}

// ---- Q8_0 / Q4_0 / Q4_1: one tile product per 32-block, scaled per block ----
//
// Each 32-block has its own weight scale and activation step, so the integer sums cannot run
// past a block: per block, a 16-row × 16-token tile product over 32 columns (A: 16 × 32 bytes,
// B: 8 × 64 bytes), stored and folded into float accumulators held in 16 registers (one per
// row) as
//   acc_r += d_rb * (e_b * C_rb)                        (Q8_0, Q4_0)
//   acc_r += d_rb * (e_b * C_rb) + m_rb * (e_b * S_b)   (Q4_1)
// with e_b the tokens' steps of the block (ActView::tile_steps) and S_b their activation sums
// (tile_sums), a vector per token tile each. Q8_0 codes and Q4_0 codes minus 8 are signed
// bytes, multiplied by tdpbssd (s8 × s8), so C is already the sum of weights × activations;
// Q4_1's nibbles are unsigned (tdpbusd) and its min term takes S. Per row and block the fold
// is a convert, a multiply by e_b and a fused multiply-add by the broadcast d_rb (Q4_1: one
// more for m_rb). Then transposed to tokens × rows. Two C tiles alternate so the tile unit
// works on the next block while the vector units fold this one.

enum class QKind { kQ8_0, kQ4_0, kQ4_1 };

// Tiles 0-1: C (16 × 64 bytes); 4: A (16 rows × 32 bytes); 6: B (8 rows × 64 bytes).
inline void ConfigureBlockTiles() {
  TileConfig cfg;
  __builtin_memset(&cfg, 0, sizeof(cfg));
  cfg.palette_id = 1;
  cfg.rows[0] = cfg.rows[1] = 16;
  cfg.colsb[0] = cfg.colsb[1] = 64;
  cfg.rows[4] = 16;
  cfg.colsb[4] = 32;
  cfg.rows[6] = 8;
  cfg.colsb[6] = 64;
  LoadTileConfig(cfg);
}

// Rows [rb, rb + nr) as one code byte per weight (row i at dst + i * ld, k_bytes = blocks * 32
// columns): Q8_0's int8 codes as they are, Q4_0's nibbles minus 8 (signed), Q4_1's nibbles;
// rows nr .. 15 zero. And their scales (and Q4_1 mins) as floats, block-major: d[b * 16 + i]
// (one block's 16 row scales contiguous, so the fold addresses them from one pointer).
// kCodesInPlace (Q8_0, whole row blocks): the tiles read the codes from the packed rows, which
// need no unpacking, so only the next row block is prefetched and the scales converted. A copy
// costs more than it saves: tile loads of freshly stored bytes wait for the stores to drain
// (`perf annotate`: a third of QTile's samples sat on its first tile product after the copy).
template <QKind kKind, bool kCodesInPlace = false>
inline void UnpackQRows(const WeightView& w, int64_t rb, int nr, uint64_t k_bytes, uint64_t ld, uint8_t* dst,
                        float* d, float* m) {
  const __m512i nibble = _mm512_set1_epi8(15);
  // Q4_0's zero point, subtracted from the nibbles (Q4_1: none).
  const __m512i zero_point = _mm512_set1_epi8(kKind == QKind::kQ4_0 ? 8 : 0);
  for (int i = 0; i < 16; ++i) {
    uint8_t* row = dst + i * ld;
    float* di = d + i;  // row i's scale of block b at di[16 b]
    float* mi = m + i;
    if (i >= nr) {
      for (uint64_t c = 0; c < k_bytes; c += 64) _mm512_store_si512(row + c, _mm512_setzero_si512());
      for (uint64_t b = 0; b < w.blocks; ++b) di[16 * b] = mi[16 * b] = 0.0f;
      continue;
    }
    const uint8_t* src = w.data + (rb + i) * w.row_bytes;
    for (uint64_t c = 0; c < w.row_bytes; c += 64) {
      // The next row block's bytes, into L2 (see UnpackTernaryRows).
      _mm_prefetch(reinterpret_cast<const char*>(src + 16 * w.row_bytes + c), _MM_HINT_T1);
      if constexpr (kCodesInPlace) continue;
      const __m512i v = _mm512_load_si512(src + c);
      if (kKind == QKind::kQ8_0) {
        _mm512_store_si512(row + c, v);
      } else {
        const __m512i lo = _mm512_sub_epi8(_mm512_and_si512(v, nibble), zero_point);
        const __m512i hi = _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi16(v, 4), nibble), zero_point);
        _mm512_store_si512(row + 2 * c, lo);
        _mm512_store_si512(row + 2 * c + 64, hi);
      }
    }
    const uint16_t* hd = w.half_d + (rb + i) * w.blocks;
    const uint16_t* hm = w.half_m + (rb + i) * w.blocks;
    // Lane j goes to block b + j: 16 floats apart.
    const __m512i block_offsets = _mm512_slli_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0), 4);
    for (uint64_t b = 0; b < w.blocks; b += 16) {
      const __mmask16 mb = FirstN(static_cast<int>(w.blocks - b));
      _mm512_mask_i32scatter_ps(di + 16 * b, mb, block_offsets, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mb, hd + b)), 4);
      if (kKind == QKind::kQ4_1) {
        _mm512_mask_i32scatter_ps(mi + 16 * b, mb, block_offsets, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mb, hm + b)),
                                  4);
      }
    }
  }
}

// Issues one block's product into C tile kC (0 or 1): C = A (tile 4: the block's 32 columns of
// the unpacked rows at a) × B (tile 6: the block's activations at b_tile), signed codes (Q8_0,
// Q4_0) by tdpbssd, Q4_1's unsigned nibbles by tdpbusd. GCC's tile intrinsics paste their tile
// numbers into the assembly text as written, so each C tile is spelled out.
template <QKind kKind, int kC>
inline void IssueBlockProduct(const uint8_t* a, uint64_t ld, const int8_t* b_tile) {
  static_assert(kC == 0 || kC == 1);
  if constexpr (kC == 0) {
    _tile_zero(0);
  } else {
    _tile_zero(1);
  }
  _tile_loadd(4, a, ld);
  _tile_loadd(6, b_tile, 64);
  if constexpr (kKind == QKind::kQ4_1 && kC == 0) {
    _tile_dpbusd(0, 4, 6);
  } else if constexpr (kKind == QKind::kQ4_1) {
    _tile_dpbusd(1, 4, 6);
  } else if constexpr (kC == 0) {
    _tile_dpbssd(0, 4, 6);
  } else {
    _tile_dpbssd(1, 4, 6);
  }
}

// Four rows' accumulators of a 16-token tile. Named vectors, not an array: GCC 12 kept an
// array of 16 accumulators in memory and loaded and stored every one on every block (as it did
// in the attention PV slab, avx512_ops.cc), which left the fold bound by the store port.
struct Acc4 {
  __m512 r0, r1, r2, r3;
};

// One row's fold: acc += d_rb · (step ⊙ C_r) [+ m_rb · (step ⊙ S) for Q4_1].
template <QKind kKind>
inline __m512 FoldRow(const int32_t* c_row, __m512 step, __m512 scaled_s, const float* d, const float* m, __m512 acc) {
  const __m512 cf = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_load_si512(c_row)), step);
  acc = _mm512_fmadd_ps(cf, _mm512_set1_ps(*d), acc);
  if constexpr (kKind == QKind::kQ4_1) acc = _mm512_fmadd_ps(scaled_s, _mm512_set1_ps(*m), acc);
  return acc;
}

// Rows 4 q .. 4 q + 3 of the C tile at c (int32 16 rows × 16 tokens) folded into a; d and m
// hold the block's 16 row scales (and mins).
template <QKind kKind>
inline void FoldRows4(const int32_t* c, int q, __m512 step, __m512 scaled_s, const float* d, const float* m, Acc4& a) {
  a.r0 = FoldRow<kKind>(c + 64 * q, step, scaled_s, d + 4 * q, m + 4 * q, a.r0);
  a.r1 = FoldRow<kKind>(c + 64 * q + 16, step, scaled_s, d + 4 * q + 1, m + 4 * q + 1, a.r1);
  a.r2 = FoldRow<kKind>(c + 64 * q + 32, step, scaled_s, d + 4 * q + 2, m + 4 * q + 2, a.r2);
  a.r3 = FoldRow<kKind>(c + 64 * q + 48, step, scaled_s, d + 4 * q + 3, m + 4 * q + 3, a.r3);
}

// Folds the C tile of block b into the 16 rows' accumulators (four named Acc4, which keeps
// them in registers), with the tokens' steps of the block and (Q4_1) their sums (16 each);
// d and m are the unpacked scales ([block][16 rows]).
template <QKind kKind>
inline void FoldBlock(const int32_t* c, const int32_t* block_sums, const float* block_steps, const float* d,
                      const float* m, uint64_t b, Acc4& a0, Acc4& a1, Acc4& a2, Acc4& a3) {
  const __m512 step = _mm512_loadu_ps(block_steps);
  __m512 scaled_s = _mm512_setzero_ps();
  if constexpr (kKind == QKind::kQ4_1) {
    scaled_s = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_load_si512(block_sums)), step);
  }
  const float* db = d + 16 * b;
  const float* mb = m + 16 * b;
  FoldRows4<kKind>(c, 0, step, scaled_s, db, mb, a0);
  FoldRows4<kKind>(c, 1, step, scaled_s, db, mb, a1);
  FoldRows4<kKind>(c, 2, step, scaled_s, db, mb, a2);
  FoldRows4<kKind>(c, 3, step, scaled_s, db, mb, a3);
}

// Rows [rb, rb + nr) (unpacked at a) × token tile tt. Software-pipelined over the blocks with
// two C tiles: block b + 2's product is issued into a tile as soon as block b's result has been
// stored from it, so the tile unit works while the vector units fold block b.
template <QKind kKind>
inline void QTile(const uint8_t* a, uint64_t ld, const float* d, const float* m, const WeightView& w, int64_t rb,
                  int nr, const ActView& x, int tt, float* out) {
  const uint64_t n_kc = x.stride / 64;
  const uint64_t n32 = x.stride / 32;
  const int8_t* bt = x.tiles + static_cast<uint64_t>(tt) * n_kc * kTileBytes;
  const int32_t* sums = x.tile_sums + static_cast<uint64_t>(tt) * n32 * 16;
  const float* steps = x.tile_steps + static_cast<uint64_t>(tt) * n32 * 16;
  const __m512 zero = _mm512_setzero_ps();
  Acc4 a0{zero, zero, zero, zero}, a1 = a0, a2 = a0, a3 = a0;
  alignas(64) int32_t c[2][256];
  // B of block b: rows (b % 2) * 8 .. + 7 of the 64-column tile b / 2.
  auto b_tile = [&](uint64_t b) { return bt + (b / 2) * kTileBytes + (b % 2) * 512; };
  // Even blocks use C tile 0, odd ones tile 1.
  const uint64_t blocks = w.blocks;
  IssueBlockProduct<kKind, 0>(a, ld, b_tile(0));
  if (blocks > 1) IssueBlockProduct<kKind, 1>(a + 32, ld, b_tile(1));
  for (uint64_t b = 0; b < blocks; b += 2) {
    _tile_stored(0, c[0], 64);
    if (b + 2 < blocks) IssueBlockProduct<kKind, 0>(a + (b + 2) * 32, ld, b_tile(b + 2));
    FoldBlock<kKind>(c[0], sums + b * 16, steps + b * 16, d, m, b, a0, a1, a2, a3);
    if (b + 1 < blocks) {
      _tile_stored(1, c[1], 64);
      if (b + 3 < blocks) IssueBlockProduct<kKind, 1>(a + (b + 3) * 32, ld, b_tile(b + 3));
      FoldBlock<kKind>(c[1], sums + (b + 1) * 16, steps + (b + 1) * 16, d, m, b + 1, a0, a1, a2, a3);
    }
  }
  // a(r / 4).r(r % 4) holds row r's 16 tokens: transpose to tokens × rows.
  __m512i v[16] = {_mm512_castps_si512(a0.r0), _mm512_castps_si512(a0.r1), _mm512_castps_si512(a0.r2),
                   _mm512_castps_si512(a0.r3), _mm512_castps_si512(a1.r0), _mm512_castps_si512(a1.r1),
                   _mm512_castps_si512(a1.r2), _mm512_castps_si512(a1.r3), _mm512_castps_si512(a2.r0),
                   _mm512_castps_si512(a2.r1), _mm512_castps_si512(a2.r2), _mm512_castps_si512(a2.r3),
                   _mm512_castps_si512(a3.r0), _mm512_castps_si512(a3.r1), _mm512_castps_si512(a3.r2),
                   _mm512_castps_si512(a3.r3)};
  Transpose16(v);
  const __mmask16 mr = FirstN(nr);
  const int t0 = tt * kAmxTileTokens;
  const int tokens = x.n_tokens - t0 < 16 ? x.n_tokens - t0 : 16;
  for (int n = 0; n < tokens; ++n) {
    const int64_t t = t0 + n;
    _mm512_mask_storeu_ps(out + t * w.rows + rb, mr, _mm512_castsi512_ps(v[n]));
  }
}

template <QKind kKind>
void AmxQuant(const WeightView& w, int64_t r0, int64_t r1, const ActView& x, float* out) {
  const uint64_t k_bytes = w.blocks * 32;
  const uint64_t ld = UnpackedStride(k_bytes);
  const uint64_t scale_floats = (16 * w.blocks + 15) / 16 * 16;
  uint8_t* scratch = AmxScratch(16 * ld + 2 * scale_floats * sizeof(float));
  uint8_t* a = scratch;
  float* d = reinterpret_cast<float*>(scratch + 16 * ld);
  float* m = d + scale_floats;
  const int n_tt = (x.n_tokens + kAmxTileTokens - 1) / kAmxTileTokens;
  ConfigureBlockTiles();
  for (int64_t rb = r0; rb < r1; rb += 16) {
    const int nr = r1 - rb < 16 ? static_cast<int>(r1 - rb) : 16;
    if (kKind == QKind::kQ8_0 && nr == 16) {  // codes read in place (see UnpackQRows)
      UnpackQRows<kKind, true>(w, rb, nr, k_bytes, ld, a, d, m);
      for (int tt = 0; tt < n_tt; ++tt) QTile<kKind>(w.data + rb * w.row_bytes, w.row_bytes, d, m, w, rb, nr, x, tt, out);
      continue;
    }
    UnpackQRows<kKind>(w, rb, nr, k_bytes, ld, a, d, m);
    for (int tt = 0; tt < n_tt; ++tt) QTile<kKind>(a, ld, d, m, w, rb, nr, x, tt, out);
  }
  _tile_release();
}

}  // namespace

void TileActivations(const int8_t* q, const int32_t* sums, const float* block_steps, int n_tokens, uint64_t stride,
                     int8_t* tiles, int32_t* tile_sums, int32_t* token_sums, float* tile_steps) {
  const int n_tt = (n_tokens + kAmxTileTokens - 1) / kAmxTileTokens;
  const uint64_t n_kc = stride / 64;
  const uint64_t n32 = stride / 32;
  for (int tt = 0; tt < n_tt; ++tt) {
    const int t0 = tt * kAmxTileTokens;
    const int tokens = n_tokens - t0 < 16 ? n_tokens - t0 : 16;
    for (uint64_t kc = 0; kc < n_kc; ++kc) {
      // Row n of v: token t0 + n's 64 bytes as 16 dwords; transposed, row r holds dword r of
      // every token, which is tile row r.
      __m512i v[16];
      for (int n = 0; n < 16; ++n) {
        v[n] = n < tokens ? _mm512_loadu_si512(q + (t0 + n) * stride + kc * 64) : _mm512_setzero_si512();
      }
      Transpose16(v);
      int8_t* tile = tiles + (tt * n_kc + kc) * kTileBytes;
      for (int r = 0; r < 16; ++r) _mm512_store_si512(tile + r * 64, v[r]);
    }
    int32_t* ts = tile_sums + tt * n32 * 16;
    float* te = tile_steps + tt * n32 * 16;
    for (uint64_t b = 0; b < n32; ++b) {
      for (int n = 0; n < 16; ++n) {
        ts[b * 16 + n] = n < tokens ? sums[(t0 + n) * n32 + b] : 0;
        te[b * 16 + n] = n < tokens ? block_steps[(t0 + n) * n32 + b] : 0.0f;
      }
    }
    for (int n = 0; n < 16; ++n) {
      int32_t total = 0;
      if (n < tokens) {
        for (uint64_t b = 0; b < n32; ++b) total += sums[(t0 + n) * n32 + b];
      }
      token_sums[t0 + n] = total;
    }
  }
}

void MatMulTernary(const WeightView& w, int64_t r0, int64_t r1, const ActView& x, float* out) {
  if (x.tiles != nullptr && w.row_scales != nullptr && x.n_tokens >= kAmxMinTokens) {
    if (x.n_tokens <= kAmxTileTokens) {
      AmxTernarySmallBatch<false>(w, r0, r1, x, out);
    } else if (x.n_tokens <= 2 * kAmxTileTokens) {
      AmxTernarySmallBatch<true>(w, r0, r1, x, out);
    } else {
      AmxTernaryUniform(w, r0, r1, x, out);
    }
  } else {
    avx512::MatMulTernary(w, r0, r1, x, out);
  }
}

void MatMulQ4_0(const WeightView& w, int64_t r0, int64_t r1, const ActView& x, float* out) {
  if (x.tiles != nullptr && x.n_tokens >= kAmxMinTokens) {
    AmxQuant<QKind::kQ4_0>(w, r0, r1, x, out);
  } else {
    avx512::MatMulQ4_0(w, r0, r1, x, out);
  }
}

void MatMulQ4_1(const WeightView& w, int64_t r0, int64_t r1, const ActView& x, float* out) {
  if (x.tiles != nullptr && x.n_tokens >= kAmxMinTokens) {
    AmxQuant<QKind::kQ4_1>(w, r0, r1, x, out);
  } else {
    avx512::MatMulQ4_1(w, r0, r1, x, out);
  }
}

void MatMulQ8_0(const WeightView& w, int64_t r0, int64_t r1, const ActView& x, float* out) {
  if (x.tiles != nullptr && x.n_tokens >= kAmxMinTokens) {
    AmxQuant<QKind::kQ8_0>(w, r0, r1, x, out);
  } else {
    avx512::MatMulQ8_0(w, r0, r1, x, out);
  }
}

}  // namespace bitfleet::kernels::cpu::amx
