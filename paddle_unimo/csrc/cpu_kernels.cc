// CPU kernels of paddle_unimo (loaded and documented by paddle_unimo/cpu_kernels.py), float32: for training,
// dropout with a counter-based generator, LayerNorm over the last axis (alone and after a residual sum), attention
// weights (scale, bias, softmax and dropout in one pass), a layer's whole attention, relu's gradient and the
// label-smoothed cross-entropy, forward and backward; for decoding steps, the attention over the cache and
// matmuls against weights packed once in panels. Their loops run on OpenMP threads where cpu_kernels.py links
// paddle's own OpenMP runtime (the one MKL's threads belong to), else on one thread; each element's result, and
// the order of every sum, is the same either way. TARGETS compiles a function for AVX2 and for the baseline,
// chosen at load time by the CPU (the panels' products: AVX-512, AVX2 with FMA, or the baseline).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include <immintrin.h>

#include "paddle/extension.h"

#define TARGETS __attribute__((target_clones("avx2", "default")))
// Philox's 32 x 32 -> 64-bit products take half the time in AVX-512 (integers only: the float kernels ran
// slower in it, their 8-lane sums split over 16-lane registers)
#define INTEGER_TARGETS __attribute__((target_clones("avx512f", "avx2", "default")))

namespace {

constexpr int64_t kLanes = 8;      // Philox counters computed side by side, so that the compiler vectorises them
constexpr int kSumLanes = 8;       // partial sums of a row, vectorised
constexpr int kMaxLanes = 16;      // partial maxima of a row, vectorised
constexpr int64_t kRowChunk = 32;  // rows whose LayerNorm weight/bias gradients are summed in float
constexpr int64_t kMinParallel = 1 << 16;  // elements below which a loop stays on one thread

// The sum of term(j) for j < width: kSumLanes float partial sums (vectorisable), added in double.
template <typename Term>
inline double LaneSum(int64_t width, Term term) {
  float lanes[kSumLanes] = {};
  int64_t j = 0;
  for (; j + kSumLanes <= width; j += kSumLanes) {
    for (int l = 0; l < kSumLanes; ++l) lanes[l] += term(j + l);
  }
  double total = 0.0;
  for (; j < width; ++j) total += term(j);
  for (int l = 0; l < kSumLanes; ++l) total += lanes[l];
  return total;
}

// Dropout's keep bits: element i is kept when word i % 4 of Philox4x32-10 (Salmon et al., "Parallel random
// numbers: as easy as 1, 2, 3", SC 2011) at counter (i / 4, 0, 0, 0) under the 64-bit key `seed`, read as a
// uniform u = (word >> 8) / 2^24 in [0, 1), has u >= p, that is (word >> 8) >= ceil(p * 2^24). Bit i % 32 of
// mask[i / 32] holds element i's.
INTEGER_TARGETS void DropoutMask(uint32_t* mask, int64_t n, float p, int64_t seed) {
  const uint32_t key0 = uint32_t(uint64_t(seed)), key1 = uint32_t(uint64_t(seed) >> 32);
  const int64_t groups = (n + 4 * kLanes - 1) / (4 * kLanes);
  const uint32_t threshold = uint32_t(std::ceil(double(p) * 16777216.0));
#pragma omp parallel for schedule(static) if (n >= kMinParallel)
  for (int64_t group = 0; group < groups; ++group) {
    uint32_t c0[kLanes], c1[kLanes], c2[kLanes], c3[kLanes];
    for (int64_t l = 0; l < kLanes; ++l) {
      const uint64_t counter = uint64_t(group * kLanes + l);
      c0[l] = uint32_t(counter);
      c1[l] = uint32_t(counter >> 32);
      c2[l] = 0;
      c3[l] = 0;
    }
    uint32_t k0 = key0, k1 = key1;
    for (int round = 0; round < 10; ++round) {
      if (round) {  // the Weyl key schedule between rounds
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
      }
      for (int64_t l = 0; l < kLanes; ++l) {
        const uint64_t p0 = uint64_t{0xD2511F53u} * c0[l], p1 = uint64_t{0xCD9E8D57u} * c2[l];
        const uint32_t n0 = uint32_t(p1 >> 32) ^ c1[l] ^ k0, n2 = uint32_t(p0 >> 32) ^ c3[l] ^ k1;
        c0[l] = n0;
        c1[l] = uint32_t(p1);
        c2[l] = n2;
        c3[l] = uint32_t(p0);
      }
    }
    const uint32_t* words[4] = {c0, c1, c2, c3};
    uint32_t bits = 0;
    for (int64_t l = 0; l < kLanes; ++l) {
      for (int64_t j = 0; j < 4; ++j) {
        bits |= uint32_t((words[j][l] >> 8) >= threshold) << (4 * l + j);
      }
    }
    mask[group] = bits;  // bits past n are never read
  }
}

// x[r, j] += bias[j] in place, rows of width n on threads; then with relu x[r, j] = x[r, j] > 0 ? x[r, j] : 0.
TARGETS void AddBiasRows(float* x, const float* bias, int64_t rows, int64_t n, bool relu) {
#pragma omp parallel for schedule(static) if (rows * n >= kMinParallel)
  for (int64_t r = 0; r < rows; ++r) {
    float* xr = x + r * n;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) xr[j] += bias[j];
    if (relu) {
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) xr[j] = xr[j] > 0.0f ? xr[j] : 0.0f;
    }
  }
}

// dx[i] = y[i] > 0 ? dy[i] : 0, relu's backward from its output y.
TARGETS void ReluGrad(const float* y, const float* dy, float* dx, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kMinParallel)
  for (int64_t i = 0; i < n; ++i) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

// y[i] = x[i] * scale where bit i of the mask is set, else x[i] * 0 (a product, which vectorises).
TARGETS void ApplyMask(const float* x, const uint32_t* mask, float* y, int64_t n, float scale) {
  const int64_t words = n / 32;
#pragma omp parallel for schedule(static) if (n >= kMinParallel)
  for (int64_t word = 0; word < words; ++word) {
    const uint32_t bits = mask[word];
    const float* xw = x + 32 * word;
    float* yw = y + 32 * word;
#pragma omp simd
    for (int j = 0; j < 32; ++j) yw[j] = xw[j] * (float((bits >> j) & 1u) * scale);
  }
  for (int64_t i = 32 * words; i < n; ++i) y[i] = x[i] * (float((mask[i >> 5] >> (i & 31)) & 1u) * scale);
}

// ApplyMask for the n elements from element `first` of a larger masked tensor, on the calling thread: y[j] =
// x[j] * scale where bit first + j of the mask is set, else x[j] * 0 (x and y may be the same). Whole mask words
// at a time where `first` starts one (rows of 32k keys).
inline void MaskRow(const float* x, const uint32_t* mask, int64_t first, float* y, int64_t n, float scale) {
  int64_t j = 0;
  if (first % 32 == 0) {
    for (; j + 32 <= n; j += 32) {
      const uint32_t bits = mask[(first + j) >> 5];
#pragma omp simd
      for (int l = 0; l < 32; ++l) y[j + l] = x[j + l] * (float((bits >> l) & 1u) * scale);
    }
  }
  for (; j < n; ++j) {
    const int64_t i = first + j;
    y[j] = x[j] * (float((mask[i >> 5] >> (i & 31)) & 1u) * scale);
  }
}

// LayerNorm over the last axis (rows x width): y = (x - mean) * rstd * weight + bias, rstd = 1 / sqrt(var +
// epsilon), the biased variance (two passes: the mean, then the squared deviations from it); each row's mean and
// rstd are outputs for the backward.
inline void LayerNormRow(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd,
                         int64_t width, float epsilon) {
  const float mu = float(LaneSum(width, [&](int64_t j) { return x[j]; }) / width);
  const double var = LaneSum(width, [&](int64_t j) { return (x[j] - mu) * (x[j] - mu); }) / width;
  const float inv = float(1.0 / std::sqrt(var + epsilon));
#pragma omp simd
  for (int64_t j = 0; j < width; ++j) y[j] = (x[j] - mu) * inv * w[j] + b[j];
  *mean = mu;
  *rstd = inv;
}

TARGETS void LayerNormRows(const float* x, const float* w, const float* b, float* y, float* means, float* rstds,
                           int64_t rows, int64_t width, float epsilon) {
#pragma omp parallel for schedule(static) if (rows * width >= kMinParallel)
  for (int64_t r = 0; r < rows; ++r) {
    LayerNormRow(x + r * width, w, b, y + r * width, means + r, rstds + r, width, epsilon);
  }
}

// A residual sum and its LayerNorm, rows on threads: s = x + h * keep bit * scale (dropout's, as ApplyMask), y =
// LayerNormRow(s).
TARGETS void ResidualLayerNormRows(const float* x, const float* h, const uint32_t* mask, float scale, const float* w,
                                   const float* b, float* s, float* y, float* means, float* rstds, int64_t rows,
                                   int64_t width, float epsilon) {
#pragma omp parallel for schedule(static) if (rows * width >= kMinParallel)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t at = r * width;
    MaskRow(h + at, mask, at, s + at, width, scale);
#pragma omp simd
    for (int64_t j = 0; j < width; ++j) s[at + j] = x[at + j] + s[at + j];
    LayerNormRow(s + at, w, b, y + at, means + r, rstds + r, width, epsilon);
  }
}

// With xhat = (x - mean) * rstd and g = dy * weight: dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) per row;
// dweight = the sum over rows of dy * xhat, dbias = the sum of dy: summed in float over chunks of kRowChunk
// rows (the chunks in parallel), the chunks' sums then added in double in their order.
TARGETS void LayerNormGradRows(const float* x, const float* w, const float* means, const float* rstds,
                               const float* dy, float* dx, double* dw, double* db, int64_t rows, int64_t width) {
  const int64_t chunks = (rows + kRowChunk - 1) / kRowChunk;
  std::vector<float> chunk_w(chunks * width, 0.0f), chunk_b(chunks * width, 0.0f);
#pragma omp parallel for schedule(static) if (rows * width >= kMinParallel)
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    float *cw = chunk_w.data() + chunk * width, *cb = chunk_b.data() + chunk * width;
    for (int64_t r = chunk * kRowChunk; r < std::min((chunk + 1) * kRowChunk, rows); ++r) {
      const float *xr = x + r * width, *dyr = dy + r * width;
      const float mu = means[r], inv = rstds[r];
      const float mean_g = float(LaneSum(width, [&](int64_t j) { return dyr[j] * w[j]; }) / width);
      const float mean_gx =
          float(LaneSum(width, [&](int64_t j) { return dyr[j] * w[j] * ((xr[j] - mu) * inv); }) / width);
      float* dxr = dx + r * width;
#pragma omp simd
      for (int64_t j = 0; j < width; ++j) {
        const float xhat = (xr[j] - mu) * inv;
        dxr[j] = inv * (dyr[j] * w[j] - mean_g - xhat * mean_gx);
        cw[j] += dyr[j] * xhat;
        cb[j] += dyr[j];
      }
    }
  }
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    for (int64_t j = 0; j < width; ++j) {
      dw[j] += chunk_w[chunk * width + j];
      db[j] += chunk_b[chunk * width + j];
    }
  }
}

// e^x for x <= 0 (a softmax's arguments less their row's maximum), within ~2 float ulps: x = n ln 2 + r with
// |r| <= ln 2 / 2, e^r by Cephes' expf polynomial, 2^n by the exponent bits; 0 below -87 (where e^x nears
// float's smallest normal). Branch-free (the zero by a bit mask), so that loops of it vectorise.
inline float ExpNonPositive(float x) {
  const float clamped = std::max(x, -87.0f);
  const int32_t n = int32_t(clamped * 1.44269504088896341f - 0.5f);  // round(x / ln 2): truncating a negative
  const float r = clamped - float(n) * 0.693359375f + float(n) * 2.12194440e-4f;  // ln 2 in two parts
  float poly = 1.9875691500e-4f;
  poly = poly * r + 1.3981999507e-3f;
  poly = poly * r + 8.3334519073e-3f;
  poly = poly * r + 4.1665795894e-2f;
  poly = poly * r + 1.6666665459e-1f;
  poly = poly * r + 5.0000001201e-1f;
  const int32_t bits = ((n + 127) << 23) & -int32_t(x >= -87.0f);  // 2^n, or +0 below -87
  float two_n;
  std::memcpy(&two_n, &bits, sizeof(two_n));
  return (poly * r * r + r + 1.0f) * two_n;
}

// Scores (batch, heads, queries, width) and a bias (batch or 1, heads or 1, queries or 1, width) broadcast over
// the axes where it has 1: the bias row of scores row r.
struct BiasRows {
  int64_t heads, queries, bias_batch, bias_heads, bias_queries;
  int64_t operator()(int64_t r) const {
    const int64_t b = r / (heads * queries), h = r / queries % heads, q = r % queries;
    return ((b % bias_batch) * bias_heads + h % bias_heads) * bias_queries + q % bias_queries;
  }
};

// y = softmax(s * scale + bias) over one row of `width`.
// The largest of x[0..width), in lanes (exact: any order gives it), vectorised.
template <bool kMagnitude = false>  // the largest |x| with kMagnitude
inline float RowMax(const float* x, int64_t width) {
  float lanes[kMaxLanes], top = -INFINITY;
  std::fill(lanes, lanes + kMaxLanes, -INFINITY);
  int64_t j = 0;
  auto value = [&](int64_t i) { return kMagnitude ? std::fabs(x[i]) : x[i]; };
  for (; j + kMaxLanes <= width; j += kMaxLanes) {
    for (int l = 0; l < kMaxLanes; ++l) lanes[l] = std::max(lanes[l], value(j + l));
  }
  for (; j < width; ++j) top = std::max(top, value(j));
  for (int l = 0; l < kMaxLanes; ++l) top = std::max(top, lanes[l]);
  return top;
}

inline void SoftmaxRow(const float* s, const float* bias, float* y, int64_t width, float scale) {
#pragma omp simd
  for (int64_t i = 0; i < width; ++i) y[i] = s[i] * scale + bias[i];
  const float top = RowMax(y, width);
#pragma omp simd
  for (int64_t i = 0; i < width; ++i) y[i] = ExpNonPositive(y[i] - top);
  const float inv = float(1.0 / LaneSum(width, [&](int64_t i) { return y[i]; }));
#pragma omp simd
  for (int64_t i = 0; i < width; ++i) y[i] *= inv;
}

// y = softmax(scores * scale + bias) over rows of width `width`.
TARGETS void SoftmaxRows(const float* scores, const float* bias, BiasRows bias_row, float* y, int64_t rows,
                         int64_t width, float scale) {
#pragma omp parallel for schedule(static) if (rows * width >= kMinParallel)
  for (int64_t r = 0; r < rows; ++r) SoftmaxRow(scores + r * width, bias + bias_row(r) * width, y + r * width, width,
                                                scale);
}

// The softmax's backward in place over one row: g becomes scale * y * (g - sum(g * y)).
inline void SoftmaxGradRow(const float* y, float* g, int64_t width, float scale) {
  const float dot = float(LaneSum(width, [&](int64_t j) { return g[j] * y[j]; }));
#pragma omp simd
  for (int64_t j = 0; j < width; ++j) g[j] = scale * y[j] * (g[j] - dot);
}

TARGETS void SoftmaxGradRows(const float* y, float* g, int64_t rows, int64_t width, float scale) {
#pragma omp parallel for schedule(static) if (rows * width >= kMinParallel)
  for (int64_t r = 0; r < rows; ++r) SoftmaxGradRow(y + r * width, g + r * width, width, scale);
}

// Eight floats as one value (GCC's vector extension): AVX2 registers in the AVX2 build, two SSE registers in the
// baseline one, the same arithmetic lane by lane in both.
typedef float F32x8 __attribute__((vector_size(32)));
typedef float F32x8Unaligned __attribute__((vector_size(32), aligned(4)));
typedef int32_t I32x8 __attribute__((vector_size(32)));

inline F32x8 Load8(const float* p) { return *reinterpret_cast<const F32x8Unaligned*>(p); }
inline void Store8(float* p, F32x8 x) { *reinterpret_cast<F32x8Unaligned*>(p) = x; }

// [a0 + a1, a2 + a3, b0 + b1, b2 + b3, a4 + a5, a6 + a7, b4 + b5, b6 + b7] (AVX's vhaddps)
inline F32x8 PairSums(F32x8 a, F32x8 b) {
  return __builtin_shuffle(a, b, I32x8{0, 2, 8, 10, 4, 6, 12, 14}) +
         __builtin_shuffle(a, b, I32x8{1, 3, 9, 11, 5, 7, 13, 15});
}

// Lane i of the result: s[i]'s lanes added as ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)).
inline F32x8 LaneTotals(const F32x8 (&s)[8]) {
  const F32x8 low = PairSums(PairSums(s[0], s[1]), PairSums(s[2], s[3])),
               high = PairSums(PairSums(s[4], s[5]), PairSums(s[6], s[7]));
  return __builtin_shuffle(low, high, I32x8{0, 1, 2, 3, 8, 9, 10, 11}) +
         __builtin_shuffle(low, high, I32x8{4, 5, 6, 7, 12, 13, 14, 15});
}

// out[j] = q . key(j) for n keys of hd floats (key(j) points at key j). Each dot product in 8 lanes, lane l summing
// q[d] * k[d] over d = l mod 8 in the order of d, every product rounded (no fused multiply-add on any target: the
// same bits on every CPU), the lanes then added by LaneTotals: eight keys at a time, their lanes reduced together
// in registers instead of one horizontal sum per key.
template <typename Key>
inline void Dots(const float* q, Key key, int64_t n, int64_t hd, float* out) {
  for (int64_t j = 0; j < n; j += 8) {
    const int64_t m = std::min<int64_t>(8, n - j);
    F32x8 s[8] = {};
    int64_t d = 0;
    if (m == 8) {
      for (; d + 8 <= hd; d += 8) {
        const F32x8 qd = Load8(q + d);
        for (int i = 0; i < 8; ++i) s[i] += qd * Load8(key(j + i) + d);
      }
    }
    for (int64_t i = 0; i < m; ++i) {  // a last block of fewer keys, and the d past a multiple of 8
      for (int64_t e = d; e < hd; ++e) s[i][e % 8] += q[e] * key(j + i)[e];
    }
    const F32x8 totals = LaneTotals(s);
    for (int64_t i = 0; i < m; ++i) out[j + i] = totals[i];
  }
}

// acc[c] += sum over j < n of w[j] * value(j)[d + c] for c < 32, in the order of j, every product rounded.
template <typename Value>
inline void AddWeighted32(const float* w, Value value, int64_t n, int64_t d, F32x8 (&acc)[4]) {
  for (int64_t j = 0; j < n; ++j) {
    const F32x8 weight = F32x8{} + w[j];
    for (int i = 0; i < 4; ++i) acc[i] += weight * Load8(value(j) + d + 8 * i);
  }
}

// One decoding step's attention, rows of `per_source` consecutive hypotheses per source: row r (source b), head h
// attends to b's source keys (with b's additive bias), to its own `length` generated keys and to its new key, by
// softmax(q . key * scale); out[r, h] is the weighted sum of the values. The new key/value then go to slot
// `length` of the row's generated buffers (T slots). q, k, v, out: (rows, heads * hd); sk, sv: (sources, heads,
// S, hd); sbias: (sources, S); gk, gv: (rows, heads, T, hd); parents (rows, T): the row whose buffers hold each
// written slot of a row's hypothesis (beam search reorders hypotheses by this table, never by moving the buffers:
// a slot, once written, is never written again). The dot products go eight keys at a time (Dots), the
// weighted sum 32 columns at a time in registers (AddWeighted32): 12 layers of a beam-6 step (24 rows, 96 source
// tokens, 8 generated) took 1.4 against 3.9 ms with the keys in cache, 3.7 against 6.1 ms read from memory (as in
// decoding, where the weights pass through the cache between layers), on the AVX-512 host's two cores.
TARGETS void StepAttentionRows(const float* q, const float* k, const float* v, const float* sk, const float* sv,
                               const float* sbias, float* gk, float* gv, const int64_t* parents, float* out,
                               int64_t sources, int64_t per_source, int64_t heads, int64_t S, int64_t T, int64_t hd,
                               int64_t length, float scale) {
  const int64_t width = heads * hd, keys = S + length + 1;
#pragma omp parallel for schedule(static) if (sources * per_source * width * keys >= kMinParallel)
  for (int64_t pair = 0; pair < sources * heads; ++pair) {  // a source's keys are read once for all its rows
    const int64_t b = pair / heads, h = pair % heads;
    const float *skh = sk + pair * S * hd, *svh = sv + pair * S * hd;
    std::vector<float> w(keys);
    for (int64_t r = b * per_source; r < (b + 1) * per_source; ++r) {
      const float *qr = q + r * width + h * hd, *kr = k + r * width + h * hd, *vr = v + r * width + h * hd;
      const int64_t* rows_of = parents + r * T;
      auto slot_of = [&](float* buffer, int64_t t) { return buffer + ((rows_of[t] * heads + h) * T + t) * hd; };
      auto source_key = [&](int64_t j) { return skh + j * hd; };
      auto source_value = [&](int64_t j) { return svh + j * hd; };
      auto generated_key = [&](int64_t t) { return slot_of(gk, t); };
      auto generated_value = [&](int64_t t) { return slot_of(gv, t); };
      auto new_key = [&](int64_t) { return kr; };
      auto new_value = [&](int64_t) { return vr; };
      Dots(qr, source_key, S, hd, w.data());
      Dots(qr, generated_key, length, hd, w.data() + S);
      Dots(qr, new_key, 1, hd, w.data() + keys - 1);
      for (int64_t j = 0; j < S; ++j) w[j] = w[j] * scale + sbias[b * S + j];
      for (int64_t j = S; j < keys; ++j) w[j] *= scale;
      float top = -INFINITY;
      for (int64_t j = 0; j < keys; ++j) top = std::max(top, w[j]);
#pragma omp simd
      for (int64_t j = 0; j < keys; ++j) w[j] = ExpNonPositive(w[j] - top);
      const float inv = float(1.0 / LaneSum(keys, [&](int64_t i) { return w[i]; }));
      for (int64_t j = 0; j < keys; ++j) w[j] *= inv;
      // out = the weights times the values, [source; generated; new] in that order, 32 columns at a time
      float* o = out + r * width + h * hd;
      int64_t d = 0;
      for (; d + 32 <= hd; d += 32) {
        F32x8 acc[4] = {};
        AddWeighted32(w.data(), source_value, S, d, acc);
        AddWeighted32(w.data() + S, generated_value, length, d, acc);
        AddWeighted32(w.data() + keys - 1, new_value, 1, d, acc);
        for (int i = 0; i < 4; ++i) Store8(o + d + 8 * i, acc[i]);
      }
      for (; d < hd; ++d) {  // the columns past a multiple of 32, in the same order
        float sum = 0.0f;
        for (int64_t j = 0; j < S; ++j) sum += w[j] * svh[j * hd + d];
        for (int64_t j = 0; j < length; ++j) sum += w[S + j] * generated_value(j)[d];
        o[d] = sum + w[keys - 1] * vr[d];
      }
      // the new key/value into this row's own buffers (the table then names this row for slot `length`)
      std::memcpy(gk + ((r * heads + h) * T + length) * hd, kr, hd * sizeof(float));
      std::memcpy(gv + ((r * heads + h) * T + length) * hd, vr, hd * sizeof(float));
    }
  }
}

int64_t MaskWords(int64_t n) { return (n + 31) / 32; }

float KeptScale(float p) { return p < 1.0f ? 1.0f / (1.0f - p) : 0.0f; }  // p = 1 drops everything

}  // namespace

// Returns the output and the keep bits (int32 words, see DropoutMask), which the backward applies again.
std::vector<paddle::Tensor> DropoutForward(const paddle::Tensor& x, float p, int64_t seed) {
  auto out = paddle::empty_like(x);
  auto mask = paddle::empty({MaskWords(x.numel())}, paddle::DataType::INT32, x.place());
  uint32_t* bits = reinterpret_cast<uint32_t*>(mask.data<int32_t>());
  DropoutMask(bits, x.numel(), p, seed);
  ApplyMask(x.data<float>(), bits, out.data<float>(), x.numel(), KeptScale(p));
  return {out, mask};
}

std::vector<paddle::Tensor> DropoutBackward(const paddle::Tensor& mask, const paddle::Tensor& grad, float p) {
  auto out = paddle::empty_like(grad);
  ApplyMask(grad.data<float>(), reinterpret_cast<const uint32_t*>(mask.data<int32_t>()), out.data<float>(),
            grad.numel(), KeptScale(p));
  return {out};
}

std::vector<std::vector<int64_t>> DropoutShapes(const std::vector<int64_t>& x) {
  int64_t n = 1;
  for (int64_t size : x) n *= size;
  return {x, {MaskWords(n)}};
}
std::vector<paddle::DataType> DropoutTypes(const paddle::DataType& x) { return {x, paddle::DataType::INT32}; }

PD_BUILD_OP(unimo_dropout)
    .Inputs({"X"})
    .Outputs({"Out", "Mask"})
    .Attrs({"p: float", "seed: int64_t"})
    .SetKernelFn(PD_KERNEL(DropoutForward))
    .SetInferShapeFn(PD_INFER_SHAPE(DropoutShapes))
    .SetInferDtypeFn(PD_INFER_DTYPE(DropoutTypes));

PD_BUILD_GRAD_OP(unimo_dropout)
    .Inputs({"Mask", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X")})
    .Attrs({"p: float"})
    .SetKernelFn(PD_KERNEL(DropoutBackward));

// A linear layer's bias added in place to its product (paddle_unimo.cpu_kernels.add_bias_): x (..., N), bias (N,);
// with relu, relu applied after, in place.
void AddBias(paddle::Tensor& x, const paddle::Tensor& bias, bool relu) {
  const int64_t n = x.shape().back();
  PD_CHECK(bias.numel() == n, "a bias of ", n, " values is needed, got ", bias.numel());
  AddBiasRows(x.data<float>(), bias.data<float>(), x.numel() / n, n, relu);
}

PD_BUILD_OP(unimo_add_bias)
    .Inputs({"X", "Bias"})
    .Outputs({"Out"})
    .SetInplaceMap({{"X", "Out"}})
    .Attrs({"relu: bool"})
    .SetKernelFn(PD_KERNEL(AddBias));

// relu's backward (paddle_unimo.cpu_kernels.relu_grad): the gradient of its input from that of its output y.
std::vector<paddle::Tensor> ReluBackward(const paddle::Tensor& y, const paddle::Tensor& grad) {
  PD_CHECK(y.numel() == grad.numel(), "relu's output has ", y.numel(), " values, its gradient ", grad.numel());
  auto dx = paddle::empty_like(grad);
  ReluGrad(y.data<float>(), grad.data<float>(), dx.data<float>(), grad.numel());
  return {dx};
}

PD_BUILD_OP(unimo_relu_backward)
    .Inputs({"Y", "Grad"})
    .Outputs({"X"})
    .SetKernelFn(PD_KERNEL(ReluBackward));

std::vector<paddle::Tensor> LayerNormForward(const paddle::Tensor& x, const paddle::Tensor& weight,
                                             const paddle::Tensor& bias, float epsilon) {
  const int64_t width = x.shape().back(), rows = x.numel() / width;
  auto y = paddle::empty_like(x);
  auto mean = paddle::empty({rows}, paddle::DataType::FLOAT32, x.place());
  auto rstd = paddle::empty({rows}, paddle::DataType::FLOAT32, x.place());
  LayerNormRows(x.data<float>(), weight.data<float>(), bias.data<float>(), y.data<float>(), mean.data<float>(),
                rstd.data<float>(), rows, width, epsilon);
  return {y, mean, rstd};
}

std::vector<paddle::Tensor> LayerNormBackward(const paddle::Tensor& x, const paddle::Tensor& weight,
                                              const paddle::Tensor& mean, const paddle::Tensor& rstd,
                                              const paddle::Tensor& grad, float epsilon) {
  const int64_t width = x.shape().back(), rows = x.numel() / width;
  auto dx = paddle::empty_like(x);
  auto dweight = paddle::empty_like(weight);
  auto dbias = paddle::empty_like(weight);
  std::vector<double> dw(width, 0.0), db(width, 0.0);
  LayerNormGradRows(x.data<float>(), weight.data<float>(), mean.data<float>(), rstd.data<float>(),
                    grad.data<float>(), dx.data<float>(), dw.data(), db.data(), rows, width);
  float *dweights = dweight.data<float>(), *dbiases = dbias.data<float>();
  for (int64_t j = 0; j < width; ++j) {
    dweights[j] = float(dw[j]);
    dbiases[j] = float(db[j]);
  }
  return {dx, dweight, dbias};
}

std::vector<std::vector<int64_t>> LayerNormShapes(const std::vector<int64_t>& x, const std::vector<int64_t>& weight,
                                                  const std::vector<int64_t>& bias) {
  int64_t rows = 1;
  for (size_t i = 0; i + 1 < x.size(); ++i) rows *= x[i];
  return {x, {rows}, {rows}};
}

std::vector<paddle::DataType> LayerNormTypes(const paddle::DataType& x, const paddle::DataType& weight,
                                             const paddle::DataType& bias) {
  return {x, paddle::DataType::FLOAT32, paddle::DataType::FLOAT32};
}

PD_BUILD_OP(unimo_layer_norm)
    .Inputs({"X", "Weight", "Bias"})
    .Outputs({"Y", "Mean", "Rstd"})
    .Attrs({"epsilon: float"})
    .SetKernelFn(PD_KERNEL(LayerNormForward))
    .SetInferShapeFn(PD_INFER_SHAPE(LayerNormShapes))
    .SetInferDtypeFn(PD_INFER_DTYPE(LayerNormTypes));

PD_BUILD_GRAD_OP(unimo_layer_norm)
    .Inputs({"X", "Weight", "Mean", "Rstd", paddle::Grad("Y")})
    .Outputs({paddle::Grad("X"), paddle::Grad("Weight"), paddle::Grad("Bias")})
    .Attrs({"epsilon: float"})
    .SetKernelFn(PD_KERNEL(LayerNormBackward));

// A post-LN layer's residual in training (paddle_unimo.cpu_kernels.LayerNorm.residual): y = LayerNorm(x +
// dropout(h)), the dropout's keep bits DropoutMask's under `seed` over h's elements (unimo_dropout's), its sum
// ApplyMask's and paddle's add's; returns y, the sum (for the backward), the rows' means and rstds, the bits.
std::vector<paddle::Tensor> ResidualLayerNormForward(const paddle::Tensor& x, const paddle::Tensor& h,
                                                     const paddle::Tensor& weight, const paddle::Tensor& bias,
                                                     float p, int64_t seed, float epsilon) {
  const int64_t width = x.shape().back(), rows = x.numel() / width;
  PD_CHECK(h.shape() == x.shape(), "the residual and its branch differ in shape");
  PD_CHECK(weight.numel() == width && bias.numel() == width, "a LayerNorm of ", width, " features is needed");
  auto y = paddle::empty_like(x), sum = paddle::empty_like(x);
  auto mean = paddle::empty({rows}, paddle::DataType::FLOAT32, x.place());
  auto rstd = paddle::empty({rows}, paddle::DataType::FLOAT32, x.place());
  auto mask = paddle::empty({MaskWords(x.numel())}, paddle::DataType::INT32, x.place());
  uint32_t* bits = reinterpret_cast<uint32_t*>(mask.data<int32_t>());
  DropoutMask(bits, x.numel(), p, seed);
  ResidualLayerNormRows(x.data<float>(), h.data<float>(), bits, KeptScale(p), weight.data<float>(),
                        bias.data<float>(), sum.data<float>(), y.data<float>(), mean.data<float>(),
                        rstd.data<float>(), rows, width, epsilon);
  return {y, sum, mean, rstd, mask};
}

// LayerNormBackward of the sum; the branch's gradient is the sum's through the dropout (ApplyMask).
std::vector<paddle::Tensor> ResidualLayerNormBackward(const paddle::Tensor& sum, const paddle::Tensor& weight,
                                                      const paddle::Tensor& mean, const paddle::Tensor& rstd,
                                                      const paddle::Tensor& mask, const paddle::Tensor& grad,
                                                      float p, float epsilon) {
  auto grads = LayerNormBackward(sum, weight, mean, rstd, grad, epsilon);
  auto dh = paddle::empty_like(grad);
  ApplyMask(grads[0].data<float>(), reinterpret_cast<const uint32_t*>(mask.data<int32_t>()), dh.data<float>(),
            grad.numel(), KeptScale(p));
  return {grads[0], dh, grads[1], grads[2]};
}

std::vector<std::vector<int64_t>> ResidualLayerNormShapes(const std::vector<int64_t>& x,
                                                          const std::vector<int64_t>& h,
                                                          const std::vector<int64_t>& weight,
                                                          const std::vector<int64_t>& bias) {
  int64_t n = 1;
  for (int64_t size : x) n *= size;
  const int64_t rows = x.empty() ? 1 : n / x.back();
  return {x, x, {rows}, {rows}, {MaskWords(n)}};
}

std::vector<paddle::DataType> ResidualLayerNormTypes(const paddle::DataType& x, const paddle::DataType& h,
                                                     const paddle::DataType& weight, const paddle::DataType& bias) {
  return {x, x, paddle::DataType::FLOAT32, paddle::DataType::FLOAT32, paddle::DataType::INT32};
}

PD_BUILD_OP(unimo_residual_layer_norm)
    .Inputs({"X", "H", "Weight", "Bias"})
    .Outputs({"Y", "Sum", "Mean", "Rstd", "Mask"})
    .Attrs({"p: float", "seed: int64_t", "epsilon: float"})
    .SetKernelFn(PD_KERNEL(ResidualLayerNormForward))
    .SetInferShapeFn(PD_INFER_SHAPE(ResidualLayerNormShapes))
    .SetInferDtypeFn(PD_INFER_DTYPE(ResidualLayerNormTypes));

PD_BUILD_GRAD_OP(unimo_residual_layer_norm)
    .Inputs({"Sum", "Weight", "Mean", "Rstd", "Mask", paddle::Grad("Y")})
    .Outputs({paddle::Grad("X"), paddle::Grad("H"), paddle::Grad("Weight"), paddle::Grad("Bias")})
    .Attrs({"p: float", "epsilon: float"})
    .SetKernelFn(PD_KERNEL(ResidualLayerNormBackward));

// softmax(scores * scale + bias) over the last axis into a new tensor; scores (B, heads, queries, keys), the
// bias broadcasting to them.
paddle::Tensor Softmax(const paddle::Tensor& scores, const paddle::Tensor& bias, float scale) {
  const auto& s = scores.shape();
  const auto& b = bias.shape();
  PD_CHECK(s.size() == 4 && b.size() == 4 && b[3] == s[3], "scores (B, heads, queries, keys) and a bias of as many "
           "dimensions with the keys last are needed, got ", s.size(), " and ", b.size(), " dimensions");
  for (int axis = 0; axis < 3; ++axis) {
    PD_CHECK(b[axis] == 1 || b[axis] == s[axis], "the bias does not broadcast to the scores on axis ", axis, " (",
             b[axis], " against ", s[axis], ")");
  }
  auto y = paddle::empty_like(scores);
  SoftmaxRows(scores.data<float>(), bias.data<float>(), BiasRows{s[1], s[2], b[0], b[1], b[2]}, y.data<float>(),
              scores.numel() / s[3], s[3], scale);
  return y;
}

// Attention probabilities in training (paddle_unimo.cpu_kernels.softmax_dropout): the dropped-out softmax of
// scores * scale + bias over the last axis, its softmax (for the backward) and the keep bits, drawn as
// DropoutForward draws them (the same masks as unimo_dropout of the softmax under the same seed).
std::vector<paddle::Tensor> SoftmaxDropoutForward(const paddle::Tensor& scores, const paddle::Tensor& bias,
                                                  float scale, float p, int64_t seed) {
  auto y = Softmax(scores, bias, scale);
  auto probs = paddle::empty_like(scores);
  auto mask = paddle::empty({MaskWords(scores.numel())}, paddle::DataType::INT32, scores.place());
  uint32_t* bits = reinterpret_cast<uint32_t*>(mask.data<int32_t>());
  DropoutMask(bits, scores.numel(), p, seed);
  ApplyMask(y.data<float>(), bits, probs.data<float>(), scores.numel(), KeptScale(p));
  return {probs, y, mask};
}

std::vector<paddle::Tensor> SoftmaxDropoutBackward(const paddle::Tensor& y, const paddle::Tensor& mask,
                                                   const paddle::Tensor& grad, float scale, float p) {
  auto dscores = paddle::empty_like(grad);
  const int64_t width = y.shape().back();
  ApplyMask(grad.data<float>(), reinterpret_cast<const uint32_t*>(mask.data<int32_t>()), dscores.data<float>(),
            grad.numel(), KeptScale(p));  // the gradient of the softmax: dropout's backward
  SoftmaxGradRows(y.data<float>(), dscores.data<float>(), y.numel() / width, width, scale);
  return {dscores};
}

std::vector<std::vector<int64_t>> SoftmaxDropoutShapes(const std::vector<int64_t>& scores,
                                                       const std::vector<int64_t>& bias) {
  int64_t n = 1;
  for (int64_t size : scores) n *= size;
  return {scores, scores, {MaskWords(n)}};
}

std::vector<paddle::DataType> SoftmaxDropoutTypes(const paddle::DataType& scores, const paddle::DataType& bias) {
  return {scores, scores, paddle::DataType::INT32};
}

PD_BUILD_OP(unimo_softmax_dropout)
    .Inputs({"Scores", "Bias"})
    .Outputs({"Probs", "Softmax", "Mask"})
    .Attrs({"scale: float", "p: float", "seed: int64_t"})
    .SetKernelFn(PD_KERNEL(SoftmaxDropoutForward))
    .SetInferShapeFn(PD_INFER_SHAPE(SoftmaxDropoutShapes))
    .SetInferDtypeFn(PD_INFER_DTYPE(SoftmaxDropoutTypes));

PD_BUILD_GRAD_OP(unimo_softmax_dropout)
    .Inputs({"Softmax", "Mask", paddle::Grad("Probs")})
    .Outputs({paddle::Grad("Scores")})
    .Attrs({"scale: float", "p: float"})
    .SetKernelFn(PD_KERNEL(SoftmaxDropoutBackward));

namespace {
// Per row r of logits (rows, vocab): p = softmax(x) into probs, and the cross-entropy against the smoothed target
// (1 - eps) onehot(label) + eps / vocab: loss[r] = log(sum e^(x - max)) - (1 - eps) (x[label] - max) - eps *
// mean(x - max); the sums in double.
TARGETS void SmoothedCrossEntropyRows(const float* logits, const int64_t* labels, float* probs, float* loss,
                                      int64_t rows, int64_t vocab, float epsilon) {
#pragma omp parallel for schedule(static) if (rows * vocab >= kMinParallel)
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = logits + r * vocab;
    float* p = probs + r * vocab;
    const float top = RowMax(x, vocab);
#pragma omp simd
    for (int64_t i = 0; i < vocab; ++i) p[i] = ExpNonPositive(x[i] - top);
    const double total = LaneSum(vocab, [&](int64_t i) { return p[i]; });
    const double shifted = LaneSum(vocab, [&](int64_t i) { return x[i] - top; });
    const float inv = float(1.0 / total);
#pragma omp simd
    for (int64_t i = 0; i < vocab; ++i) p[i] *= inv;
    loss[r] = float(std::log(total) - (1.0 - epsilon) * (x[labels[r]] - top) - epsilon * shifted / vocab);
  }
}
}  // namespace

// Label-smoothed cross-entropy per row (paddle_unimo.losses.label_smoothed_cross_entropy): logits (rows, vocab),
// labels (rows,) int64; returns the rows' losses and the softmax (for the backward).
std::vector<paddle::Tensor> SmoothedCrossEntropyForward(const paddle::Tensor& logits, const paddle::Tensor& labels,
                                                        float epsilon) {
  const auto& s = logits.shape();
  PD_CHECK(s.size() == 2 && labels.numel() == s[0], "logits (rows, vocab) and a label a row are needed");
  const int64_t* label = labels.data<int64_t>();
  for (int64_t r = 0; r < s[0]; ++r) {
    PD_CHECK(0 <= label[r] && label[r] < s[1], "label ", label[r], " of row ", r, " is not in the vocabulary of ",
             s[1]);
  }
  auto loss = paddle::empty({s[0]}, paddle::DataType::FLOAT32, logits.place());
  auto probs = paddle::empty_like(logits);
  SmoothedCrossEntropyRows(logits.data<float>(), label, probs.data<float>(), loss.data<float>(), s[0], s[1],
                           epsilon);
  return {loss, probs};
}

// d logits[r] = grad[r] * (softmax - the smoothed target).
std::vector<paddle::Tensor> SmoothedCrossEntropyBackward(const paddle::Tensor& probs, const paddle::Tensor& labels,
                                                         const paddle::Tensor& grad, float epsilon) {
  const int64_t rows = probs.shape()[0], vocab = probs.shape()[1];
  auto dlogits = paddle::empty_like(probs);
  const float *p = probs.data<float>(), *g = grad.data<float>();
  const int64_t* label = labels.data<int64_t>();
  float* d = dlogits.data<float>();
  const float spread = epsilon / vocab;
#pragma omp parallel for schedule(static) if (rows * vocab >= kMinParallel)
  for (int64_t r = 0; r < rows; ++r) {
#pragma omp simd
    for (int64_t j = 0; j < vocab; ++j) d[r * vocab + j] = g[r] * (p[r * vocab + j] - spread);
    d[r * vocab + label[r]] -= g[r] * (1.0f - epsilon);
  }
  return {dlogits};
}

std::vector<std::vector<int64_t>> SmoothedCrossEntropyShapes(const std::vector<int64_t>& logits,
                                                             const std::vector<int64_t>& labels) {
  return {{logits[0]}, logits};
}

std::vector<paddle::DataType> SmoothedCrossEntropyTypes(const paddle::DataType& logits,
                                                        const paddle::DataType& labels) {
  return {logits, logits};
}

PD_BUILD_OP(unimo_smoothed_cross_entropy)
    .Inputs({"Logits", "Labels"})
    .Outputs({"Loss", "Probs"})
    .Attrs({"epsilon: float"})
    .SetKernelFn(PD_KERNEL(SmoothedCrossEntropyForward))
    .SetInferShapeFn(PD_INFER_SHAPE(SmoothedCrossEntropyShapes))
    .SetInferDtypeFn(PD_INFER_DTYPE(SmoothedCrossEntropyTypes));

PD_BUILD_GRAD_OP(unimo_smoothed_cross_entropy)
    .Inputs({"Probs", "Labels", paddle::Grad("Loss")})
    .Outputs({paddle::Grad("Logits")})
    .Attrs({"epsilon: float"})
    .SetKernelFn(PD_KERNEL(SmoothedCrossEntropyBackward));

// Attention probabilities in inference (paddle_unimo.cpu_kernels.softmax): Softmax, no dropout.
std::vector<paddle::Tensor> SoftmaxInference(const paddle::Tensor& scores, const paddle::Tensor& bias, float scale) {
  return {Softmax(scores, bias, scale)};
}

std::vector<std::vector<int64_t>> SoftmaxShapes(const std::vector<int64_t>& scores, const std::vector<int64_t>& bias) {
  return {scores};
}

std::vector<paddle::DataType> SoftmaxTypes(const paddle::DataType& scores, const paddle::DataType& bias) {
  return {scores};
}

PD_BUILD_OP(unimo_softmax)
    .Inputs({"Scores", "Bias"})
    .Outputs({"Probs"})
    .Attrs({"scale: float"})
    .SetKernelFn(PD_KERNEL(SoftmaxInference))
    .SetInferShapeFn(PD_INFER_SHAPE(SoftmaxShapes))
    .SetInferDtypeFn(PD_INFER_DTYPE(SoftmaxTypes));

namespace {
// The checks of a step's cache and q/k/v (values q_size each) against each other.
void CheckStepCache(int64_t q_size, const paddle::Tensor& source_k, const paddle::Tensor& source_v,
                    const paddle::Tensor& source_bias, const paddle::Tensor& generated_k,
                    const paddle::Tensor& generated_v, const paddle::Tensor& parents, int64_t length) {
  const auto &s = source_k.shape(), &g = generated_k.shape();
  PD_CHECK(s.size() == 4 && g.size() == 4 && g[1] == s[1] && g[3] == s[3] && g[0] % s[0] == 0,
           "source keys (B, heads, S, head_dim) and generated keys (B * n, heads, T, head_dim) are needed");
  PD_CHECK(q_size == g[0] * g[1] * g[3], "q, k and v need rows * heads * head_dim = ", g[0] * g[1] * g[3],
           " values, got ", q_size);
  PD_CHECK(source_v.shape() == s && generated_v.shape() == g && source_bias.numel() == s[0] * s[2],
           "source values, generated values and the source bias do not match the keys");
  PD_CHECK(0 <= length && length < g[2], "slot ", length, " is not in the generated buffers' ", g[2], " slots");
  PD_CHECK(parents.dtype() == paddle::DataType::INT64 && parents.numel() == g[0] * g[2],
           "the slots' rows are int64 (rows, T) = (", g[0], ", ", g[2], ")");
  const int64_t* rows_of = parents.data<int64_t>();
  for (int64_t r = 0; r < g[0]; ++r) {
    for (int64_t t = 0; t < length; ++t) {
      PD_CHECK(0 <= rows_of[r * g[2] + t] && rows_of[r * g[2] + t] < g[0], "slot ", t, " of row ", r,
               " names row ", rows_of[r * g[2] + t], ", not one of the ", g[0], " rows");
    }
  }
}

void StepAttentionInto(const float* q, const float* k, const float* v, const paddle::Tensor& source_k,
                       const paddle::Tensor& source_v, const paddle::Tensor& source_bias, paddle::Tensor& generated_k,
                       paddle::Tensor& generated_v, const paddle::Tensor& parents, float* out, int64_t length,
                       float scale) {
  const auto &s = source_k.shape(), &g = generated_k.shape();
  StepAttentionRows(q, k, v, source_k.data<float>(), source_v.data<float>(), source_bias.data<float>(),
                    generated_k.data<float>(), generated_v.data<float>(), parents.data<int64_t>(), out, s[0],
                    g[0] / s[0], s[1], s[2], g[2], s[3], length, scale);
}
}  // namespace

// A decoding step's attention (paddle_unimo.cpu_kernels.step_attention): StepAttentionRows, the generated key and
// value buffers written in place. q, k, v: (rows, 1, heads * head_dim); source_bias: (sources, 1, 1, S).
std::vector<paddle::Tensor> StepAttention(const paddle::Tensor& q, const paddle::Tensor& k, const paddle::Tensor& v,
                                          const paddle::Tensor& source_k, const paddle::Tensor& source_v,
                                          const paddle::Tensor& source_bias, paddle::Tensor& generated_k,
                                          paddle::Tensor& generated_v, const paddle::Tensor& parents,
                                          int64_t length, float scale) {
  PD_CHECK(k.numel() == q.numel() && v.numel() == q.numel(), "q, k and v differ in size");
  CheckStepCache(q.numel(), source_k, source_v, source_bias, generated_k, generated_v, parents, length);
  auto out = paddle::empty_like(q);
  StepAttentionInto(q.data<float>(), k.data<float>(), v.data<float>(), source_k, source_v, source_bias, generated_k,
                    generated_v, parents, out.data<float>(), length, scale);
  return {out};
}

PD_BUILD_OP(unimo_step_attention)
    .Inputs({"Q", "K", "V", "SourceK", "SourceV", "SourceBias", "GeneratedK", "GeneratedV", "Parents"})
    .Outputs({"Out", "GeneratedKOut", "GeneratedVOut"})
    .SetInplaceMap({{"GeneratedK", "GeneratedKOut"}, {"GeneratedV", "GeneratedVOut"}})
    .Attrs({"length: int64_t", "scale: float"})
    .SetKernelFn(PD_KERNEL(StepAttention));

// The search's two passes over a decoding step's scores (rows, vocab), for paddle_unimo.generation:
// LogSoftmaxRows, the log-probabilities with the constraints' columns, and GroupTopK, each source's best
// candidates over its hypotheses' rows. One pass each instead of paddle's ~9 operators (0.40 against 2.6 ms for a
// beam-6 step's 24 rows over 18000 tokens).
namespace {
// Per row of x (rows, width): y = x + before, then out = ((y - max y) - log sum e^(y - max y)) + after, before and
// after (width,) added to every row; the sum by ExpNonPositive and LaneSum, its log in double.
TARGETS void LogSoftmaxRows(const float* x, const float* before, const float* after, float* out, int64_t rows,
                            int64_t width) {
#pragma omp parallel for schedule(static) if (rows * width >= kMinParallel)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * width;
    float* o = out + r * width;
#pragma omp simd
    for (int64_t j = 0; j < width; ++j) o[j] = xr[j] + before[j];
    const float top = RowMax(o, width);
    const float lse = float(std::log(LaneSum(width, [&](int64_t j) { return ExpNonPositive(o[j] - top); })));
#pragma omp simd
    for (int64_t j = 0; j < width; ++j) o[j] = ((o[j] - top) - lse) + after[j];
  }
}

// a ranks above b: larger, or NaN against a number (paddle.topk's order); equal values rank alike
inline bool RanksAbove(float a, float b) { return a > b || (a != a && b == b); }

// Per group g of `per_group` consecutive rows of x (rows, width): the k largest of x[r, j] + bias[r] over the
// group's rows, as values and indices (r - g * per_group) * width + j into the group's rows laid end to end, best
// first; of equal values the smaller index first. One pass over the rows keeping the best k in order (most values
// are turned away by one comparison with the k-th).
TARGETS void GroupTopK(const float* x, const float* bias, int64_t groups, int64_t per_group, int64_t width,
                       int64_t k, float* values, int64_t* indices) {
#pragma omp parallel for schedule(static) if (groups * per_group * width >= kMinParallel)
  for (int64_t g = 0; g < groups; ++g) {
    std::vector<std::pair<float, int64_t>> best;  // (value, index), best first
    best.reserve(k + 1);
    for (int64_t i = 0; i < per_group; ++i) {
      const float* xr = x + (g * per_group + i) * width;
      const float b = bias[g * per_group + i];
      for (int64_t j = 0; j < width; ++j) {
        const float value = xr[j] + b;
        if (int64_t(best.size()) == k && !RanksAbove(value, best.back().first)) continue;
        auto at = best.end();
        while (at != best.begin() && RanksAbove(value, (at - 1)->first)) --at;
        best.insert(at, {value, i * width + j});
        if (int64_t(best.size()) > k) best.pop_back();
      }
    }
    for (int64_t i = 0; i < k; ++i) {
      values[g * k + i] = best[i].first;
      indices[g * k + i] = best[i].second;
    }
  }
}
}  // namespace

// Log-probabilities of a decoding step (paddle_unimo.cpu_kernels.log_softmax): x (rows, vocab), before and after
// (vocab,) (the constraints' banned and, before min_length, eos columns; zeros where none).
std::vector<paddle::Tensor> LogSoftmax(const paddle::Tensor& x, const paddle::Tensor& before,
                                       const paddle::Tensor& after) {
  const auto& s = x.shape();
  PD_CHECK(s.size() == 2 && before.numel() == s[1] && after.numel() == s[1],
           "scores (rows, vocab) and two columns of vocab values are needed");
  auto out = paddle::empty_like(x);
  LogSoftmaxRows(x.data<float>(), before.data<float>(), after.data<float>(), out.data<float>(), s[0], s[1]);
  return {out};
}

std::vector<std::vector<int64_t>> LogSoftmaxShapes(const std::vector<int64_t>& x, const std::vector<int64_t>& before,
                                                    const std::vector<int64_t>& after) {
  return {x};
}

std::vector<paddle::DataType> LogSoftmaxTypes(const paddle::DataType& x, const paddle::DataType& before,
                                              const paddle::DataType& after) {
  return {x};
}

PD_BUILD_OP(unimo_log_softmax)
    .Inputs({"X", "Before", "After"})
    .Outputs({"Out"})
    .SetKernelFn(PD_KERNEL(LogSoftmax))
    .SetInferShapeFn(PD_INFER_SHAPE(LogSoftmaxShapes))
    .SetInferDtypeFn(PD_INFER_DTYPE(LogSoftmaxTypes));

// Beam search's candidates (paddle_unimo.cpu_kernels.group_top_k): x (rows, vocab) the hypotheses' scores, bias
// (rows,) their running scores, rows in `groups` groups of consecutive rows (the sources' hypotheses).
std::vector<paddle::Tensor> GroupTopKOp(const paddle::Tensor& x, const paddle::Tensor& bias, int64_t groups,
                                        int64_t k) {
  const auto& s = x.shape();
  PD_CHECK(s.size() == 2 && bias.numel() == s[0], "scores (rows, vocab) and a bias a row are needed");
  PD_CHECK(groups > 0 && s[0] % groups == 0, s[0], " rows do not split into ", groups, " groups");
  PD_CHECK(0 < k && k <= s[0] / groups * s[1], "k = ", k, " is not in [1, ", s[0] / groups * s[1],
           "], a group's values");
  auto values = paddle::empty({groups, k}, paddle::DataType::FLOAT32, x.place());
  auto indices = paddle::empty({groups, k}, paddle::DataType::INT64, x.place());
  GroupTopK(x.data<float>(), bias.data<float>(), groups, s[0] / groups, s[1], k, values.data<float>(),
            indices.data<int64_t>());
  return {values, indices};
}

std::vector<std::vector<int64_t>> GroupTopKShapes(const std::vector<int64_t>& x, const std::vector<int64_t>& bias,
                                                  int64_t groups, int64_t k) {
  return {{groups, k}, {groups, k}};
}

std::vector<paddle::DataType> GroupTopKTypes(const paddle::DataType& x, const paddle::DataType& bias) {
  return {paddle::DataType::FLOAT32, paddle::DataType::INT64};
}

PD_BUILD_OP(unimo_group_top_k)
    .Inputs({"X", "Bias"})
    .Outputs({"Values", "Indices"})
    .Attrs({"groups: int64_t", "k: int64_t"})
    .SetKernelFn(PD_KERNEL(GroupTopKOp))
    .SetInferShapeFn(PD_INFER_SHAPE(GroupTopKShapes))
    .SetInferDtypeFn(PD_INFER_DTYPE(GroupTopKTypes));

// Decoding's weights in panels (paddle_unimo.cpu_kernels.pack_weight): a (K, N) weight as ceil(N / kPanel) panels,
// each K rows of kPanel consecutive columns (row-major; the last panel's columns past N are 0). A product of a few
// rows, a decoding step's, streams each panel once, in order, with its columns' sums held in registers: it reads the
// weights at the memory's speed, where a plain sgemm packs them anew at every call and MKL's packed sgemm reads its
// layout more slowly; at a prefill's hundreds of rows it runs at MKL's rate. Every output element is the bias plus its
// K products added in order by fused multiply-adds, whatever the number of rows, the threads or the CPU (the
// baseline build, for CPUs without FMA, rounds each product first). Panels in bfloat16 (the weight rounded to
// nearest, ties to even) hold half the bytes; each weight is widened to float exactly as it is read, so the result
// is the float panels' on the rounded weights, bit for bit, and a step of a few rows reads them in half the time.
//
// Panels in int8 (dynamic quantization, weights and activations in 8 bits): each column's weights w as q_w =
// round(w * (L / m)) with m = max |w| over the column, its scale s_w = m / L, L the panels' weight levels (127; 63
// for "int8_w7", 7-bit weights); each input row x, at every product, as q_x = round(x * (127 / m_x)) with m_x =
// max |x| over the row, s_x = m_x / 127 (float32 operations; round: to nearest, ties to even, within +-L; a row or
// column of zeros gives zeros). y = fma(float(sum q_x q_w), s_x * s_w, bias), the sum exact in int32, so every
// instruction set gives the same bits and a row's result depends on that row alone. A panel holds its 64 columns'
// scales (float32), the sums of their q_w (int32) and a row whose first byte is L (kInt8Header rows of bytes), then
// the q_w in groups of 4 rows: for each column its 4 bytes together, as AVX-512 VNNI's VPDPBUSD multiplies them
// with 4 bytes of an input row (q_x + 128, unsigned; 128 * the column's sum taken off the result after). A quarter
// of the float panels' bytes, and 4 times their products per instruction: on the AVX-512 host the 12 layers'
// products of unimo-text-1.0 took x3.0-3.4 less time than the float panels' at 1 to 384 rows. AVX2 has no such
// exact instruction (VPMADDUBSW, below): on the AVX2 host, with 8-bit weights its products took x1.3-2.1 less than
// the AVX2 float panels' at 1 to 384 rows, with 7-bit ones x1.9-2.7. CPUs without AVX2 run a plain loop, the same sums.
namespace {
constexpr int64_t kPanel = 64;
constexpr int64_t kPrefetch = 16;  // panel rows ahead that are fetched into the cache

inline float Widen(float w) { return w; }
inline float Widen(uint16_t w) { return __builtin_bit_cast(float, uint32_t(w) << 16); }  // bfloat16's bits

uint16_t ToBfloat16(float f) {  // to nearest, ties to even; a NaN stays a NaN
  const uint32_t u = __builtin_bit_cast(uint32_t, f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  return uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// y (R rows, stride ldy) = x (R rows of k) @ columns [0, W) of a panel of T (float or bfloat16 bits) + bias.
template <int R, int W, bool kFused, typename T>
__attribute__((always_inline)) inline void PanelRows(const float* x, int64_t k, const T* panel, const float* bias,
                                                     float* y, int64_t ldy) {
  float sums[R][W];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < W; ++c) sums[r][c] = bias[c];
  for (int64_t i = 0; i < k; ++i) {
    const T* row = panel + i * kPanel;
    for (int c = 0; c < W; c += 64 / sizeof(T)) __builtin_prefetch(row + kPrefetch * kPanel + c);
    const float* w;
    float widened[W];
    if constexpr (std::is_same_v<T, float>) {
      w = row;  // read in place: a copy made the float products 2.6x slower at 24 rows
    } else {
      for (int c = 0; c < W; ++c) widened[c] = Widen(row[c]);
      w = widened;
    }
    for (int r = 0; r < R; ++r) {
      const float a = x[r * k + i];
      for (int c = 0; c < W; ++c) sums[r][c] = kFused ? __builtin_fmaf(a, w[c], sums[r][c]) : sums[r][c] + a * w[c];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < W; ++c) y[r * ldy + c] = sums[r][c];
}

// y (rows, stride ldy) = x (rows, k) @ a whole panel + bias: W columns at a time, up to RM rows at a time -- as many
// sums as the CPU's vector registers hold.
template <int W, int RM, bool kFused, typename T>
__attribute__((always_inline)) inline void PanelBlock(const float* x, int64_t rows, int64_t k, const T* panel,
                                                      const float* bias, float* y, int64_t ldy) {
  for (int c = 0; c < kPanel; c += W) {
    for (int64_t r = 0; r < rows;) {
      const float* xr = x + r * k;
      float* yr = y + r * ldy + c;
      switch (std::min<int64_t>(rows - r, RM)) {
        case 6: PanelRows<6, W, kFused>(xr, k, panel + c, bias + c, yr, ldy); r += 6; break;
        case 5:
        case 4: PanelRows<4, W, kFused>(xr, k, panel + c, bias + c, yr, ldy); r += 4; break;
        case 3: PanelRows<3, W, kFused>(xr, k, panel + c, bias + c, yr, ldy); r += 3; break;
        case 2: PanelRows<2, W, kFused>(xr, k, panel + c, bias + c, yr, ldy); r += 2; break;
        default: PanelRows<1, W, kFused>(xr, k, panel + c, bias + c, yr, ldy); r += 1;
      }
    }
  }
}

// AVX2: R (up to 6) rows x 16 columns of a panel, the sums in 12 registers, a panel row's 16 weights in two
// (widened from bfloat16 where T is), one row's input broadcast; the same fused multiply-adds in the same order as
// PanelRows. Its own function, in intrinsics: PanelRows inlined at these sizes kept the sums on the stack, and so
// did this one inlined into its caller. On a 2-core AMD EPYC without AVX-512 (Zen 3), 2 threads, against
// PanelRows' 3 x 32 (float) and 2 x 32 (bfloat16): float as fast at 24 and 384 rows (x1.05 with the weights in
// cache), bfloat16 x1.9-2.2 (now as fast as float, or faster where the weights come from memory).
__attribute__((always_inline, target("avx2"))) inline __m256 Load8Avx2(const float* p) { return _mm256_loadu_ps(p); }
__attribute__((always_inline, target("avx2"))) inline __m256 Load8Avx2(const uint16_t* p) {  // bfloat16's bits
  const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}
template <int R, typename T>
__attribute__((noinline, target("avx2,fma"))) void PanelRows16Avx2(const float* x, int64_t k, const T* panel,
                                                                   const float* bias, float* y, int64_t ldy) {
  __m256 sums[R][2];
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r) sums[r][0] = _mm256_loadu_ps(bias), sums[r][1] = _mm256_loadu_ps(bias + 8);
  for (int64_t i = 0; i < k; ++i) {
    const T* row = panel + i * kPanel;
    __builtin_prefetch(row + kPrefetch * kPanel);
    const __m256 w0 = Load8Avx2(row), w1 = Load8Avx2(row + 8);
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) {
      const __m256 a = _mm256_broadcast_ss(x + r * k + i);
      sums[r][0] = _mm256_fmadd_ps(a, w0, sums[r][0]), sums[r][1] = _mm256_fmadd_ps(a, w1, sums[r][1]);
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r) _mm256_storeu_ps(y + r * ldy, sums[r][0]), _mm256_storeu_ps(y + r * ldy + 8, sums[r][1]);
}

// AVX-512: 6 rows x 64 columns of sums (24 of the 32 registers); its BW part widens bfloat16 panels 32 at a time
// (without it they took 2-4x the float ones' time). AVX2: up to 4 rows, 64 columns, some sums spilled to the stack
// but each panel read once, in order (1.35-1.5x faster there, AVX-512 host); above, PanelRows16Avx2 over the
// panel's four 16-column strips.
template <typename T>
__attribute__((target("avx512f,avx512bw"))) void PanelAvx512(const float* x, int64_t rows, int64_t k, const T* panel,
                                                              const float* bias, float* y, int64_t ldy) {
  PanelBlock<64, 6, true>(x, rows, k, panel, bias, y, ldy);
}
template <typename T>
__attribute__((target("avx2,fma"))) void PanelAvx2(const float* x, int64_t rows, int64_t k, const T* panel,
                                                   const float* bias, float* y, int64_t ldy) {
  if (rows <= 4) {  // read from memory at few rows: each panel at once, in order (strips: x0.65 at 1-4 rows)
    PanelBlock<64, 4, true>(x, rows, k, panel, bias, y, ldy);
    return;
  }
  using Rows = void (*)(const float*, int64_t, const T*, const float*, float*, int64_t);
  static constexpr Rows kRows[6] = {PanelRows16Avx2<1, T>, PanelRows16Avx2<2, T>, PanelRows16Avx2<3, T>,
                                    PanelRows16Avx2<4, T>, PanelRows16Avx2<5, T>, PanelRows16Avx2<6, T>};
  for (int c = 0; c < kPanel; c += 16) {
    for (int64_t r = 0; r < rows; r += 6)
      kRows[std::min<int64_t>(rows - r, 6) - 1](x + r * k, k, panel + c, bias + c, y + r * ldy + c, ldy);
  }
}
template <typename T>
void PanelBaseline(const float* x, int64_t rows, int64_t k, const T* panel, const float* bias, float* y,
                   int64_t ldy) {
  PanelBlock<32, 1, false>(x, rows, k, panel, bias, y, ldy);
}

template <typename T>
using PanelFn = void (*)(const float*, int64_t, int64_t, const T*, const float*, float*, int64_t);

// The CPU's best, or the one PADDLE_UNIMO_PANEL_ISA names (avx512, avx2 or baseline: tests, comparisons).
template <typename T>
PanelFn<T> ChoosePanel() {
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw"),
             avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const char* chosen = std::getenv("PADDLE_UNIMO_PANEL_ISA");
  const std::string isa = chosen ? chosen : avx512 ? "avx512" : avx2 ? "avx2" : "baseline";
  PD_CHECK(isa == "baseline" || (isa == "avx2" && avx2) || (isa == "avx512" && avx512), "PADDLE_UNIMO_PANEL_ISA=",
           isa, " is not one this CPU runs: ", avx512 ? "avx512 (AVX-512F, BW), " : "",
           avx2 ? "avx2 (AVX2, FMA), " : "", "baseline");
  return isa == "avx512" ? PanelAvx512<T> : isa == "avx2" ? PanelAvx2<T> : PanelBaseline<T>;
}

// y (rows, n) panel by panel, on threads for rows * k * n of kMinParallel or more: block(j, panel bias, out, ldy)
// writes panel j's kPanel columns; the last panel, narrower, through buffers of a whole panel's width.
template <typename Block>
void EachPanel(int64_t rows, int64_t k, int64_t n, const float* bias, float* y, const Block& block) {
  const int64_t count = (n + kPanel - 1) / kPanel;
#pragma omp parallel for schedule(static) if (count > 1 && rows * k * n >= kMinParallel)
  for (int64_t j = 0; j < count; ++j) {
    const int64_t first = j * kPanel, width = std::min(kPanel, n - first);
    if (width == kPanel) {
      block(j, bias + first, y + first, n);
      continue;
    }
    float padded[kPanel] = {};
    std::memcpy(padded, bias + first, width * sizeof(float));
    std::vector<float> out(rows * kPanel);
    block(j, padded, out.data(), kPanel);
    for (int64_t r = 0; r < rows; ++r) std::memcpy(y + r * n + first, out.data() + r * kPanel, width * sizeof(float));
  }
}

template <typename T>
void PanelProduct(const float* x, int64_t rows, int64_t k, const T* w, const float* bias, int64_t n, float* y) {
  static const PanelFn<T> block = ChoosePanel<T>();
  EachPanel(rows, k, n, bias, y, [&](int64_t j, const float* panel_bias, float* out, int64_t ldy) {
    block(x, rows, k, w + j * k * kPanel, panel_bias, out, ldy);
  });
}

constexpr int64_t kInt8Header = 9;  // an int8 panel's first rows: its float32 scales, its int32 column sums, L
constexpr int64_t kInt8Levels = 8 * kPanel;  // the byte holding L, the panel's weight levels
constexpr int64_t kMaxInt8K = 65536;  // input features whose sums of (q_x + 128) * q_w cannot overflow int32

inline int64_t Groups4(int64_t k) { return (k + 3) / 4; }

// L / m and m / L for the largest magnitude m of a row or column, L levels; 0 and 0 for zeros (or a NaN).
inline void Int8Scales(float largest, float levels, float* inverse, float* scale) {
  const bool some = largest > 0.0f;
  *inverse = some ? levels / largest : 0.0f;
  *scale = some ? largest / levels : 0.0f;
}

// round(v), to nearest, ties to even, within [-L, L] (a NaN to -L); branch-free, so that loops vectorise.
inline int Int8Round(float v, float levels = 127.0f) {
  const float within = v > -levels ? (v < levels ? v : levels) : -levels;
  return int(std::nearbyint(within));
}

// Rows of x (rows, k) quantized: xq (rows, 4 * Groups4(k)) of q_x + 128 (128 past k), their scales s_x.
TARGETS void QuantizeRows(const float* x, int64_t rows, int64_t k, uint8_t* xq, float* scales) {
  const int64_t width = 4 * Groups4(k);
#pragma omp parallel for schedule(static) if (rows * k >= kMinParallel)
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * k;
    float inverse;
    Int8Scales(RowMax<true>(row, k), 127.0f, &inverse, &scales[r]);
    uint8_t* out = xq + r * width;
    for (int64_t i = 0; i < k; ++i) out[i] = uint8_t(Int8Round(row[i] * inverse) + 128);
    for (int64_t i = k; i < width; ++i) out[i] = 128;
  }
}

// y (R rows, stride ldy) = fma(float(sums), s_x * s_w, bias): R rows' sums of q_x q_w over a panel's columns.
template <int R>
__attribute__((always_inline)) inline void Int8Epilogue(const int32_t (&sums)[R][kPanel], const float* sx,
                                                        const int8_t* panel, const float* bias, float* y, int64_t ldy) {
  const float* sw = reinterpret_cast<const float*>(panel);
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < kPanel; ++c) y[r * ldy + c] = __builtin_fmaf(float(sums[r][c]), sx[r] * sw[c], bias[c]);
}

// Up to 6 rows' sums over a panel by VPDPBUSD, in named registers stored as they are (the column sums taken off in
// a loop after): reading them back as an array of registers to subtract them made GCC copy them between registers
// and to the stack at every step (x0.4 at 384 rows).
#define UNIMO_VNNI_ROW(r, acc)                                                                 \
  if constexpr (R > r) {                                                                       \
    int32_t four;                                                                              \
    std::memcpy(&four, xq + r * width + 4 * g, 4);                                             \
    const __m512i x = _mm512_set1_epi32(four);                                                 \
    acc##0 = _mm512_dpbusd_epi32(acc##0, x, w0), acc##1 = _mm512_dpbusd_epi32(acc##1, x, w1); \
    acc##2 = _mm512_dpbusd_epi32(acc##2, x, w2), acc##3 = _mm512_dpbusd_epi32(acc##3, x, w3); \
  }
template <int R>
__attribute__((always_inline, target("avx512f,avx512bw,avx512vnni"))) inline void Int8RowsVnni(
    const uint8_t* xq, int64_t width, const float* sx, const int8_t* panel, const float* bias, float* y, int64_t ldy) {
  const int8_t* w = panel + kInt8Header * kPanel;
  const __m512i zero = _mm512_setzero_si512();
  __m512i a0 = zero, a1 = zero, a2 = zero, a3 = zero, b0 = zero, b1 = zero, b2 = zero, b3 = zero, c0 = zero,
          c1 = zero, c2 = zero, c3 = zero, d0 = zero, d1 = zero, d2 = zero, d3 = zero, e0 = zero, e1 = zero,
          e2 = zero, e3 = zero, f0 = zero, f1 = zero, f2 = zero, f3 = zero;
  for (int64_t g = 0; g < width / 4; ++g) {
    const int8_t* group = w + g * 4 * kPanel;
    for (int line = 0; line < 4; ++line)
      _mm_prefetch(reinterpret_cast<const char*>(group + kPrefetch * 4 * kPanel + line * 64), _MM_HINT_T0);
    __m512i w0 = _mm512_loadu_si512(group), w1 = _mm512_loadu_si512(group + 64), w2 = _mm512_loadu_si512(group + 128),
            w3 = _mm512_loadu_si512(group + 192);
    // in registers: GCC otherwise reads them from memory at every VPDPBUSD, and the loads bound the loop (x0.65)
    __asm__("" : "+v"(w0), "+v"(w1), "+v"(w2), "+v"(w3));
    UNIMO_VNNI_ROW(0, a) UNIMO_VNNI_ROW(1, b) UNIMO_VNNI_ROW(2, c) UNIMO_VNNI_ROW(3, d) UNIMO_VNNI_ROW(4, e)
    UNIMO_VNNI_ROW(5, f)
  }
  int32_t sums[R][kPanel];
#define UNIMO_VNNI_STORE(r, acc)                                                                       \
  if constexpr (R > r) {                                                                               \
    _mm512_storeu_si512(sums[r], acc##0), _mm512_storeu_si512(sums[r] + 16, acc##1);                  \
    _mm512_storeu_si512(sums[r] + 32, acc##2), _mm512_storeu_si512(sums[r] + 48, acc##3);             \
  }
  UNIMO_VNNI_STORE(0, a) UNIMO_VNNI_STORE(1, b) UNIMO_VNNI_STORE(2, c) UNIMO_VNNI_STORE(3, d) UNIMO_VNNI_STORE(4, e)
  UNIMO_VNNI_STORE(5, f)
#undef UNIMO_VNNI_STORE
  const int32_t* column_sums = reinterpret_cast<const int32_t*>(panel + kPanel * 4);
  for (int r = 0; r < R; ++r)  // sum (q_x + 128) q_w - 128 sum q_w
    for (int c = 0; c < kPanel; ++c) sums[r][c] -= 128 * column_sums[c];
  Int8Epilogue<R>(sums, sx, panel, bias, y, ldy);
}
#undef UNIMO_VNNI_ROW

// AVX-512 VNNI: 6 rows x 64 columns of int32 sums (24 registers), the group's 4 weight registers.
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void Int8PanelVnni(const uint8_t* xq, int64_t rows,
                                                                           int64_t width, const float* sx,
                                                                           const int8_t* panel, const float* bias,
                                                                           float* y, int64_t ldy) {
  for (int64_t r = 0; r < rows;) {
    const uint8_t* xr = xq + r * width;
    float* yr = y + r * ldy;
    switch (std::min<int64_t>(rows - r, 6)) {
      case 6: Int8RowsVnni<6>(xr, width, sx + r, panel, bias, yr, ldy); r += 6; break;
      case 5:
      case 4: Int8RowsVnni<4>(xr, width, sx + r, panel, bias, yr, ldy); r += 4; break;
      case 3: Int8RowsVnni<3>(xr, width, sx + r, panel, bias, yr, ldy); r += 3; break;
      case 2: Int8RowsVnni<2>(xr, width, sx + r, panel, bias, yr, ldy); r += 2; break;
      default: Int8RowsVnni<1>(xr, width, sx + r, panel, bias, yr, ldy); r += 1;
    }
  }
}

// AVX2: VPMADDUBSW multiplies unsigned bytes by signed ones and adds pairs in 16 bits, saturating above 32767;
// VPMADDWD adds the pairs into 32 bits: each column's 4 products. With 7-bit weights it takes q_x + 128 as it is (a
// pair at most 2 * 255 * 63: no saturation; 128 * the column's sum taken off after, as VNNI's); with 8-bit ones
// |q_x| by q_w carrying q_x's sign (VPSIGNB; at most 2 * 127 * 127), one more instruction per 32 products on the
// same ports (x1.4-1.5 slower at 24-384 rows, the AVX2 host). 2 rows x 32 columns of sums at a time (8 registers).
template <int R, bool kSevenBit>
__attribute__((always_inline, target("avx2"))) inline void Int8RowsAvx2(const uint8_t* xq, int64_t width,
                                                                        const int8_t* panel,
                                                                        int32_t (&sums)[R][kPanel]) {
  const int8_t* w = panel + kInt8Header * kPanel;
  const __m256i ones = _mm256_set1_epi16(1);
  for (int half = 0; half < kPanel; half += 32) {
    __m256i acc[R][4];
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < 4; ++j) acc[r][j] = _mm256_setzero_si256();
    for (int64_t g = 0; g < width / 4; ++g) {
      const int8_t* group = w + g * 4 * kPanel + half * 4;
      __m256i x[R], magnitude[R];
      for (int r = 0; r < R; ++r) {
        int32_t four;
        std::memcpy(&four, xq + r * width + 4 * g, 4);
        x[r] = _mm256_set1_epi32(kSevenBit ? four : four ^ int32_t(0x80808080u));  // q_x + 128, or q_x
        magnitude[r] = kSevenBit ? x[r] : _mm256_abs_epi8(x[r]);
      }
      for (int j = 0; j < 4; ++j) {
        const __m256i weights = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(group + 32 * j));
        for (int r = 0; r < R; ++r) {
          const __m256i pairs =
              _mm256_maddubs_epi16(magnitude[r], kSevenBit ? weights : _mm256_sign_epi8(weights, x[r]));
          acc[r][j] = _mm256_add_epi32(acc[r][j], _mm256_madd_epi16(pairs, ones));
        }
      }
    }
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < 4; ++j) _mm256_storeu_si256(reinterpret_cast<__m256i*>(sums[r] + half + 8 * j), acc[r][j]);
  }
  if constexpr (kSevenBit) {  // sum (q_x + 128) q_w - 128 sum q_w
    const int32_t* column_sums = reinterpret_cast<const int32_t*>(panel + kPanel * 4);
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < kPanel; ++c) sums[r][c] -= 128 * column_sums[c];
  }
}

template <int R>
__attribute__((always_inline, target("avx2"))) inline void Int8RowsAvx2(const uint8_t* xq, int64_t width,
                                                                        const int8_t* panel,
                                                                        int32_t (&sums)[R][kPanel]) {
  if (panel[kInt8Levels] <= 63) {
    Int8RowsAvx2<R, true>(xq, width, panel, sums);
  } else {
    Int8RowsAvx2<R, false>(xq, width, panel, sums);
  }
}

__attribute__((target("avx2,fma"))) void Int8PanelAvx2(const uint8_t* xq, int64_t rows, int64_t width,
                                                       const float* sx, const int8_t* panel, const float* bias,
                                                       float* y, int64_t ldy) {
  for (int64_t r = 0; r < rows;) {
    if (rows - r >= 2) {
      int32_t sums[2][kPanel];
      Int8RowsAvx2<2>(xq + r * width, width, panel, sums);
      Int8Epilogue<2>(sums, sx + r, panel, bias, y + r * ldy, ldy);
      r += 2;
    } else {
      int32_t sums[1][kPanel];
      Int8RowsAvx2<1>(xq + r * width, width, panel, sums);
      Int8Epilogue<1>(sums, sx + r, panel, bias, y + r * ldy, ldy);
      r += 1;
    }
  }
}

// Elsewhere: the same sums, a row at a time.
void Int8PanelPlain(const uint8_t* xq, int64_t rows, int64_t width, const float* sx, const int8_t* panel,
                    const float* bias, float* y, int64_t ldy) {
  const int8_t* w = panel + kInt8Header * kPanel;
  for (int64_t r = 0; r < rows; ++r) {
    int32_t sums[1][kPanel] = {};
    for (int64_t g = 0; g < width / 4; ++g)
      for (int c = 0; c < kPanel; ++c)
        for (int t = 0; t < 4; ++t)
          sums[0][c] += (int32_t(xq[r * width + 4 * g + t]) - 128) * int32_t(w[(g * kPanel + c) * 4 + t]);
    Int8Epilogue<1>(sums, sx + r, panel, bias, y + r * ldy, ldy);
  }
}

using Int8PanelFn = void (*)(const uint8_t*, int64_t, int64_t, const float*, const int8_t*, const float*, float*,
                             int64_t);

// The CPU's best (AVX-512 VNNI, AVX2, the plain loop), or the one PADDLE_UNIMO_PANEL_ISA names (ChoosePanel; avx512
// runs the AVX2 path where the CPU lacks VNNI).
Int8PanelFn ChooseInt8Panel() {
  const PanelFn<float> chosen = ChoosePanel<float>();  // checks PADDLE_UNIMO_PANEL_ISA
  const bool vnni = __builtin_cpu_supports("avx512vnni");
  return chosen == PanelAvx512<float> ? (vnni ? Int8PanelVnni : Int8PanelAvx2)
         : chosen == PanelAvx2<float> ? Int8PanelAvx2
                                      : Int8PanelPlain;
}

// y (rows, n) = x (rows, k) @ int8 panels + bias: the rows quantized once, then each panel on a thread.
void Int8Product(const float* x, int64_t rows, int64_t k, const int8_t* w, const float* bias, int64_t n, float* y) {
  static const Int8PanelFn block = ChooseInt8Panel();
  PD_CHECK(k <= kMaxInt8K, "int8 panels take up to ", kMaxInt8K, " input features, not ", k);
  const int64_t width = 4 * Groups4(k), stride = (kInt8Header + width) * kPanel;
  for (int64_t j = 0; j < (n + kPanel - 1) / kPanel; ++j) {  // each VPMADDUBSW path is exact only for its own L
    const int levels = w[j * stride + kInt8Levels];
    PD_CHECK(levels == 127 || levels == 63, "int8 panel ", j, " holds weight levels ", levels, ", not 127 or 63");
  }
  std::vector<uint8_t> xq(rows * width);
  std::vector<float> sx(rows);
  QuantizeRows(x, rows, k, xq.data(), sx.data());
  EachPanel(rows, k, n, bias, y, [&](int64_t j, const float* panel_bias, float* out, int64_t ldy) {
    block(xq.data(), rows, width, sx.data(), w + j * stride, panel_bias, out, ldy);
  });
}

// y (rows, n) = x (rows, k) @ the panels of a (k, n) weight (float32, bfloat16 or int8) + bias (n,); the panels on
// threads.
void PackedProduct(const float* x, int64_t rows, int64_t k, const paddle::Tensor& panels, const float* bias,
                   int64_t n, float* y) {
  const int64_t count = (n + kPanel - 1) / kPanel;
  if (panels.dtype() == paddle::DataType::INT8) {
    PD_CHECK(panels.shape() == std::vector<int64_t>({count, kInt8Header + 4 * Groups4(k), kPanel}),
             "the int8 panels of a (", k, ", ", n, ") weight are needed (", kInt8Header,
             " header rows: an export from a version with 8 must be made again)");
    Int8Product(x, rows, k, panels.data<int8_t>(), bias, n, y);
    return;
  }
  PD_CHECK(panels.shape() == std::vector<int64_t>({count, k, kPanel}), "the panels of a (", k, ", ", n,
           ") weight are needed");
  if (panels.dtype() == paddle::DataType::BFLOAT16) {
    PanelProduct(x, rows, k, reinterpret_cast<const uint16_t*>(panels.data<paddle::bfloat16>()), bias, n, y);
  } else {
    PD_CHECK(panels.dtype() == paddle::DataType::FLOAT32, "panels of float32, bfloat16 or int8 are needed");
    PanelProduct(x, rows, k, panels.data<float>(), bias, n, y);
  }
}
}  // namespace

// weight: (K, N) as nn.Linear keeps it, or (N, K) with transposed (a tied embedding); returns its panels in dtype:
// float32 or bfloat16, (ceil(N / kPanel), K, kPanel), each weight rounded to bfloat16 in the latter; or int8,
// (ceil(N / kPanel), kInt8Header + 4 * ceil(K / 4), kPanel): each panel its columns' scales and sums, then the
// quantized weights in groups of 4 rows (0 past K).
std::vector<paddle::Tensor> PackWeight(const paddle::Tensor& weight, bool transposed, const std::string& dtype) {
  const auto& s = weight.shape();
  PD_CHECK(s.size() == 2, "a weight of 2 dimensions is needed, got ", s.size());
  PD_CHECK(dtype == "float32" || dtype == "bfloat16" || dtype == "int8" || dtype == "int8_w7",
           "panels of float32, bfloat16, int8 or int8_w7, not ", dtype);
  const int64_t k = transposed ? s[1] : s[0], n = transposed ? s[0] : s[1], count = (n + kPanel - 1) / kPanel;
  const bool bfloat16 = dtype == "bfloat16", int8 = dtype == "int8" || dtype == "int8_w7";
  const float levels = dtype == "int8_w7" ? 63.0f : 127.0f;
  PD_CHECK(!int8 || k <= kMaxInt8K, "int8 panels take up to ", kMaxInt8K, " input features, not ", k);
  const auto type = int8 ? paddle::DataType::INT8 : bfloat16 ? paddle::DataType::BFLOAT16 : paddle::DataType::FLOAT32;
  const int64_t rows = int8 ? kInt8Header + 4 * Groups4(k) : k;
  auto packed = paddle::empty({count, rows, kPanel}, type, weight.place());
  const float* w = weight.data<float>();
  float* p = type == paddle::DataType::FLOAT32 ? packed.data<float>() : nullptr;
  uint16_t* h = bfloat16 ? reinterpret_cast<uint16_t*>(packed.data<paddle::bfloat16>()) : nullptr;
  int8_t* q = int8 ? packed.data<int8_t>() : nullptr;
#pragma omp parallel for schedule(static) if (k * n >= kMinParallel)
  for (int64_t j = 0; j < count; ++j) {
    auto value = [&](int64_t i, int64_t c) {
      const int64_t column = j * kPanel + c;
      return column >= n ? 0.0f : transposed ? w[column * k + i] : w[i * n + column];
    };
    if (int8) {
      int8_t* panel = q + j * rows * kPanel;
      float scales[kPanel];
      int32_t sums[kPanel];
      std::memset(panel + kInt8Levels, 0, rows * kPanel - kInt8Levels);
      panel[kInt8Levels] = int8_t(levels);
      for (int64_t c = 0; c < kPanel; ++c) {
        float largest = 0.0f, inverse;
        for (int64_t i = 0; i < k; ++i) largest = std::max(largest, std::fabs(value(i, c)));
        Int8Scales(largest, levels, &inverse, &scales[c]);
        sums[c] = 0;
        for (int64_t i = 0; i < k; ++i) {
          const int v = Int8Round(value(i, c) * inverse, levels);
          panel[(kInt8Header + i / 4 * 4) * kPanel + c * 4 + i % 4] = int8_t(v);
          sums[c] += v;
        }
      }
      std::memcpy(panel, scales, sizeof(scales));
      std::memcpy(panel + sizeof(scales), sums, sizeof(sums));
      continue;
    }
    for (int64_t i = 0; i < k; ++i) {
      const int64_t at = (j * k + i) * kPanel;
      for (int64_t c = 0; c < kPanel; ++c) {
        if (bfloat16) {
          h[at + c] = ToBfloat16(value(i, c));
        } else {
          p[at + c] = value(i, c);
        }
      }
    }
  }
  return {packed};
}

PD_BUILD_OP(unimo_pack_weight)
    .Inputs({"Weight"})
    .Outputs({"Packed"})
    .Attrs({"transposed: bool", "dtype: std::string"})
    .SetKernelFn(PD_KERNEL(PackWeight));

// x (..., K) @ the packed (K, N) weight + bias (N,).
std::vector<paddle::Tensor> PackedLinear(const paddle::Tensor& x, const paddle::Tensor& packed,
                                         const paddle::Tensor& bias, int64_t n) {
  const int64_t k = x.shape().back(), rows = x.numel() / k;
  PD_CHECK(bias.numel() == n, "a bias of ", n, " values is needed, got ", bias.numel());
  auto shape = x.shape();
  shape.back() = n;
  auto out = paddle::empty(shape, paddle::DataType::FLOAT32, x.place());
  PackedProduct(x.data<float>(), rows, k, packed, bias.data<float>(), n, out.data<float>());
  return {out};
}

std::vector<std::vector<int64_t>> PackedLinearShapes(const std::vector<int64_t>& x, const std::vector<int64_t>& packed,
                                                     const std::vector<int64_t>& bias, int64_t n) {
  auto shape = x;
  shape.back() = n;
  return {shape};
}

std::vector<paddle::DataType> PackedLinearTypes(const paddle::DataType& x, const paddle::DataType& packed,
                                               const paddle::DataType& bias) {
  return {x};
}

PD_BUILD_OP(unimo_packed_linear)
    .Inputs({"X", "Packed", "Bias"})
    .Outputs({"Out"})
    .Attrs({"n: int64_t"})
    .SetKernelFn(PD_KERNEL(PackedLinear))
    .SetInferShapeFn(PD_INFER_SHAPE(PackedLinearShapes))
    .SetInferDtypeFn(PD_INFER_DTYPE(PackedLinearTypes));

#ifdef UNIMO_MKL
extern "C" void vsErf(int n, const float* a, float* y);  // MKL's vector erf (paddle's libmklml_intel)
#endif

namespace {
// x = 0.5 x (1 + erf(x / sqrt 2)) (gelu by erf), the erf by MKL's vsErf where paddle ships MKL: ~25x glibc's
// erff, which took ~13 ms for a beam-6 step's 12 x 24 x 3072 values on one thread (0.5 ms); else std::erf.
void GeluInPlace(float* x, int64_t n) {
  std::vector<float> e(n);
  for (int64_t i = 0; i < n; ++i) e[i] = x[i] * float(M_SQRT1_2);
#ifdef UNIMO_MKL
  vsErf(int(n), e.data(), e.data());
#else
  for (float& v : e) v = std::erf(v);
#endif
  for (int64_t i = 0; i < n; ++i) x[i] = 0.5f * x[i] * (1.0f + e[i]);
}
}  // namespace

// A decoding step through one transformer layer in inference (paddle_unimo.cpu_kernels.step_layer): x (rows, 1, H)
// of one new token a row; its six linear layers against packed weights (PackedProduct), the step's attention
// (StepAttentionRows, which writes the new key and value to slot `length` of the generated buffers and reads the
// written slots where `parents` names them), the two
// residual sums, the two LayerNorms (LayerNormRows) and the activation (relu, or gelu by erf), after (post-LN) or
// before (normalize_before) each block -- the ~11 operators of the layer as one. packed: the (q, k, v, out,
// linear1, linear2) weights; params: their six biases, then norm1's weight and bias and norm2's.
std::vector<paddle::Tensor> StepLayer(const paddle::Tensor& x, const std::vector<paddle::Tensor>& packed,
                                      const std::vector<paddle::Tensor>& params, const paddle::Tensor& source_k,
                                      const paddle::Tensor& source_v, const paddle::Tensor& source_bias,
                                      paddle::Tensor& generated_k, paddle::Tensor& generated_v,
                                      const paddle::Tensor& parents, const paddle::Tensor& slot, float scale,
                                      float epsilon, bool gelu, bool normalize_before) {
  PD_CHECK(slot.numel() == 1 && slot.dtype() == paddle::DataType::INT64, "the slot is one int64 value");
  const int64_t length = slot.data<int64_t>()[0];
  PD_CHECK(packed.size() == 6 && params.size() == 10, "6 packed weights and 10 parameters are needed, got ",
           packed.size(), " and ", params.size());
  const int64_t hidden = x.shape().back(), rows = x.numel() / hidden, inner = params[4].numel();
  CheckStepCache(x.numel(), source_k, source_v, source_bias, generated_k, generated_v, parents, length);
  for (int i = 0; i < 10; ++i) {
    const int64_t want = i == 4 ? inner : hidden;
    PD_CHECK(params[i].numel() == want, "parameter ", i, " needs ", want, " values, got ", params[i].numel());
  }
  const float* p[10];
  for (int i = 0; i < 10; ++i) p[i] = params[i].data<float>();
  auto out = paddle::empty_like(x);
  const float* in = x.data<float>();
  float* y = out.data<float>();
  std::vector<float> q(rows * hidden), k(rows * hidden), v(rows * hidden), a(rows * hidden), h(rows * inner),
      stats(2 * rows);
  auto norm = [&](const float* from, int which, float* to) {
    LayerNormRows(from, p[6 + 2 * which], p[7 + 2 * which], to, stats.data(), stats.data() + rows, rows, hidden,
                  epsilon);
  };
  const float* attn_in = in;
  if (normalize_before) {
    norm(in, 0, y);  // y holds norm1(x) until the attention's output is added to x
    attn_in = y;
  }
  PackedProduct(attn_in, rows, hidden, packed[0], p[0], hidden, q.data());
  PackedProduct(attn_in, rows, hidden, packed[1], p[1], hidden, k.data());
  PackedProduct(attn_in, rows, hidden, packed[2], p[2], hidden, v.data());
  StepAttentionInto(q.data(), k.data(), v.data(), source_k, source_v, source_bias, generated_k, generated_v, parents,
                    a.data(), length, scale);
  PackedProduct(a.data(), rows, hidden, packed[3], p[3], hidden, y);
  for (int64_t i = 0; i < rows * hidden; ++i) y[i] += in[i];  // y = x + attention
  float* ffn_in = q.data();  // the block's input: norm2(y) before, norm1(y) after (post-LN also its residual)
  if (normalize_before) {
    norm(y, 1, ffn_in);
  } else {
    norm(y, 0, y);
    ffn_in = y;
  }
  PackedProduct(ffn_in, rows, hidden, packed[4], p[4], inner, h.data());
  if (gelu) {
    GeluInPlace(h.data(), rows * inner);
  } else {
    for (float& e : h) e = std::max(e, 0.0f);
  }
  PackedProduct(h.data(), rows, inner, packed[5], p[5], hidden, k.data());
  for (int64_t i = 0; i < rows * hidden; ++i) y[i] += k[i];  // + the feed-forward block
  if (!normalize_before) norm(y, 1, y);
  return {out};
}

std::vector<std::vector<int64_t>> StepLayerShapes(
    const std::vector<int64_t>& x, const std::vector<std::vector<int64_t>>& packed,
    const std::vector<std::vector<int64_t>>& params, const std::vector<int64_t>& source_k,
    const std::vector<int64_t>& source_v, const std::vector<int64_t>& source_bias,
    const std::vector<int64_t>& generated_k, const std::vector<int64_t>& generated_v,
    const std::vector<int64_t>& parents, const std::vector<int64_t>& slot) {
  return {x, generated_k, generated_v};
}

std::vector<paddle::DataType> StepLayerTypes(
    const paddle::DataType& x, const std::vector<paddle::DataType>& packed, const std::vector<paddle::DataType>& params,
    const paddle::DataType& source_k, const paddle::DataType& source_v, const paddle::DataType& source_bias,
    const paddle::DataType& generated_k, const paddle::DataType& generated_v, const paddle::DataType& parents,
    const paddle::DataType& slot) {
  return {x, generated_k, generated_v};
}

PD_BUILD_OP(unimo_step_layer)
    .Inputs({"X", paddle::Vec("Packed"), paddle::Vec("Params"), "SourceK", "SourceV", "SourceBias", "GeneratedK",
             "GeneratedV", "Parents", "Slot"})
    .Outputs({"Out", "GeneratedKOut", "GeneratedVOut"})
    .SetInplaceMap({{"GeneratedK", "GeneratedKOut"}, {"GeneratedV", "GeneratedVOut"}})
    .Attrs({"scale: float", "epsilon: float", "gelu: bool", "normalize_before: bool"})
    .SetKernelFn(PD_KERNEL(StepLayer))
    .SetInferShapeFn(PD_INFER_SHAPE(StepLayerShapes))
    .SetInferDtypeFn(PD_INFER_DTYPE(StepLayerTypes));

#ifdef UNIMO_MKL
// MKL's sgemm (LP64, from paddle's libmklml_intel), for the training attention.
extern "C" {
void cblas_sgemm(int layout, int transa, int transb, int m, int n, int k, float alpha, const float* a, int lda,
                 const float* b, int ldb, float beta, float* c, int ldc);
int MKL_Set_Num_Threads_Local(int threads);
}

namespace {
enum { kRowMajor = 101, kNoTrans = 111, kTrans = 112 };

// MKL on the calling thread alone while it lives. Inside a team of one thread (one OpenMP thread, or a region too
// small to split) MKL would otherwise take the threads paddle set for it (Paddle Inference's predictors set them),
// and its AVX2 sgemm then splits the sums differently: other bits than inside a team of two.
struct OneMklThread {
  const int before = MKL_Set_Num_Threads_Local(1);
  ~OneMklThread() { MKL_Set_Num_Threads_Local(before); }
};
}  // namespace

// Attention in training (paddle_unimo.cpu_kernels.attention), for q (B, Lq, heads * hd) and k, v (B, Lk, heads *
// hd) -- the linear layers' outputs, each head's columns side by side -- and an additive bias (B or 1, heads or 1,
// Lq or 1, Lk): per (batch, head) pair, on threads, probs = dropout(softmax(q k^T * scale + bias)) and out = probs v,
// written into the head's columns of out (B, Lq, heads * hd). The products are MKL's sgemm on the heads' strided
// columns (one thread's each, inside the pairs' threads), so no head is transposed or copied; the softmax rows are
// SoftmaxRow's, the keep bits DropoutMask's over (B, heads, Lq, Lk), the same as unimo_softmax_dropout of the
// scores (B, heads, Lq, Lk) under the same seed. The backward recomputes probs from the softmax and the bits.
namespace {
struct AttentionShape {
  int64_t batch, queries, keys, heads, hd, bias_batch, bias_heads, bias_queries;
  int64_t width() const { return heads * hd; }
  int64_t pairs() const { return batch * heads; }
  const float* BiasRow(const float* bias, int64_t b, int64_t h, int64_t q) const {
    return bias + (((b % bias_batch) * bias_heads + h % bias_heads) * bias_queries + q % bias_queries) * keys;
  }
};

AttentionShape CheckAttention(const paddle::Tensor& q, const paddle::Tensor& k, const paddle::Tensor& v,
                              const paddle::Tensor& bias, int64_t heads) {
  const auto &sq = q.shape(), &sk = k.shape(), &b = bias.shape();
  PD_CHECK(sq.size() == 3 && sk.size() == 3 && v.shape() == sk && sq[0] == sk[0] && sq[2] == sk[2],
           "q (B, Lq, H) and k, v (B, Lk, H) are needed");
  PD_CHECK(heads > 0 && sq[2] % heads == 0, sq[2], " features do not split into ", heads, " heads");
  PD_CHECK(b.size() == 4 && b[3] == sk[1] && (b[0] == 1 || b[0] == sq[0]) && (b[1] == 1 || b[1] == heads) &&
               (b[2] == 1 || b[2] == sq[1]),
           "the bias does not broadcast to the scores (", sq[0], ", ", heads, ", ", sq[1], ", ", sk[1], ")");
  return {sq[0], sq[1], sk[1], heads, sq[2] / heads, b[0], b[1], b[2]};
}

TARGETS void AttentionPairs(const float* q, const float* k, const float* v, const float* bias,
                            const uint32_t* mask, const AttentionShape& s, float scale, float keep, float* y,
                            float* out) {
  const int64_t lq = s.queries, lk = s.keys, hd = s.hd, width = s.width();
#pragma omp parallel if (s.pairs() * lq * lk >= kMinParallel)
  {
    const OneMklThread alone;
    std::vector<float> probs(lq * lk);
#pragma omp for schedule(static)
    for (int64_t pair = 0; pair < s.pairs(); ++pair) {
      const int64_t b = pair / s.heads, h = pair % s.heads;
      const float *qh = q + b * lq * width + h * hd, *kh = k + b * lk * width + h * hd,
                  *vh = v + b * lk * width + h * hd;
      float* yp = y + pair * lq * lk;
      cblas_sgemm(kRowMajor, kNoTrans, kTrans, lq, lk, hd, 1.0f, qh, width, kh, width, 0.0f, probs.data(), lk);
      for (int64_t i = 0; i < lq; ++i) {
        float* row = probs.data() + i * lk;
        SoftmaxRow(row, s.BiasRow(bias, b, h, i), yp + i * lk, lk, scale);
        MaskRow(yp + i * lk, mask, (pair * lq + i) * lk, row, lk, keep);
      }
      cblas_sgemm(kRowMajor, kNoTrans, kNoTrans, lq, hd, lk, 1.0f, probs.data(), lk, vh, width, 0.0f,
                  out + b * lq * width + h * hd, width);
    }
  }
}

// The gradients of q, k and v from that of out (AttentionPairs's layouts): per pair, with probs recomputed,
// dv = probs^T dout, dscores = softmax'(dropout'(dout v^T)) (SoftmaxGradRow, which applies the scale), dq = dscores
// k, dk = dscores^T q.
TARGETS void AttentionGradPairs(const float* q, const float* k, const float* v, const float* y,
                                const uint32_t* mask, const float* grad, const AttentionShape& s, float scale,
                                float keep, float* dq, float* dk, float* dv) {
  const int64_t lq = s.queries, lk = s.keys, hd = s.hd, width = s.width();
#pragma omp parallel if (s.pairs() * lq * lk >= kMinParallel)
  {
    const OneMklThread alone;
    std::vector<float> probs(lq * lk), dscores(lq * lk);
#pragma omp for schedule(static)
    for (int64_t pair = 0; pair < s.pairs(); ++pair) {
      const int64_t b = pair / s.heads, h = pair % s.heads, first = pair * lq * lk;
      const int64_t at_q = b * lq * width + h * hd, at_k = b * lk * width + h * hd;
      const float* yp = y + first;
      MaskRow(yp, mask, first, probs.data(), lq * lk, keep);
      cblas_sgemm(kRowMajor, kTrans, kNoTrans, lk, hd, lq, 1.0f, probs.data(), lk, grad + at_q, width, 0.0f,
                  dv + at_k, width);
      cblas_sgemm(kRowMajor, kNoTrans, kTrans, lq, lk, hd, 1.0f, grad + at_q, width, v + at_k, width, 0.0f,
                  dscores.data(), lk);
      MaskRow(dscores.data(), mask, first, dscores.data(), lq * lk, keep);
      for (int64_t i = 0; i < lq; ++i) SoftmaxGradRow(yp + i * lk, dscores.data() + i * lk, lk, scale);
      cblas_sgemm(kRowMajor, kNoTrans, kNoTrans, lq, hd, lk, 1.0f, dscores.data(), lk, k + at_k, width, 0.0f,
                  dq + at_q, width);
      cblas_sgemm(kRowMajor, kTrans, kNoTrans, lk, hd, lq, 1.0f, dscores.data(), lk, q + at_q, width, 0.0f,
                  dk + at_k, width);
    }
  }
}
}  // namespace

// Returns out, the softmax (B, heads, Lq, Lk) and the keep bits (for the backward).
std::vector<paddle::Tensor> AttentionForward(const paddle::Tensor& q, const paddle::Tensor& k,
                                             const paddle::Tensor& v, const paddle::Tensor& bias, int64_t heads,
                                             float scale, float p, int64_t seed) {
  const AttentionShape s = CheckAttention(q, k, v, bias, heads);
  auto out = paddle::empty_like(q);
  auto y = paddle::empty({s.batch, heads, s.queries, s.keys}, paddle::DataType::FLOAT32, q.place());
  auto mask = paddle::empty({MaskWords(y.numel())}, paddle::DataType::INT32, q.place());
  uint32_t* bits = reinterpret_cast<uint32_t*>(mask.data<int32_t>());
  DropoutMask(bits, y.numel(), p, seed);
  AttentionPairs(q.data<float>(), k.data<float>(), v.data<float>(), bias.data<float>(), bits, s, scale,
                 KeptScale(p), y.data<float>(), out.data<float>());
  return {out, y, mask};
}

std::vector<paddle::Tensor> AttentionBackward(const paddle::Tensor& q, const paddle::Tensor& k,
                                              const paddle::Tensor& v, const paddle::Tensor& bias,
                                              const paddle::Tensor& y, const paddle::Tensor& mask,
                                              const paddle::Tensor& grad, int64_t heads, float scale, float p) {
  const AttentionShape s = CheckAttention(q, k, v, bias, heads);
  auto dq = paddle::empty_like(q), dk = paddle::empty_like(k), dv = paddle::empty_like(v);
  AttentionGradPairs(q.data<float>(), k.data<float>(), v.data<float>(), y.data<float>(),
                     reinterpret_cast<const uint32_t*>(mask.data<int32_t>()), grad.data<float>(), s, scale,
                     KeptScale(p), dq.data<float>(), dk.data<float>(), dv.data<float>());
  return {dq, dk, dv};
}

std::vector<std::vector<int64_t>> AttentionShapes(const std::vector<int64_t>& q, const std::vector<int64_t>& k,
                                                  const std::vector<int64_t>& v, const std::vector<int64_t>& bias,
                                                  int64_t heads) {
  const std::vector<int64_t> scores = {q[0], heads, q[1], k[1]};
  return {q, scores, {MaskWords(q[0] * heads * q[1] * k[1])}};
}

std::vector<paddle::DataType> AttentionTypes(const paddle::DataType& q, const paddle::DataType& k,
                                             const paddle::DataType& v, const paddle::DataType& bias) {
  return {q, q, paddle::DataType::INT32};
}

PD_BUILD_OP(unimo_attention)
    .Inputs({"Q", "K", "V", "Bias"})
    .Outputs({"Out", "Softmax", "Mask"})
    .Attrs({"heads: int64_t", "scale: float", "p: float", "seed: int64_t"})
    .SetKernelFn(PD_KERNEL(AttentionForward))
    .SetInferShapeFn(PD_INFER_SHAPE(AttentionShapes))
    .SetInferDtypeFn(PD_INFER_DTYPE(AttentionTypes));

PD_BUILD_GRAD_OP(unimo_attention)
    .Inputs({"Q", "K", "V", "Bias", "Softmax", "Mask", paddle::Grad("Out")})
    .Outputs({paddle::Grad("Q"), paddle::Grad("K"), paddle::Grad("V")})
    .Attrs({"heads: int64_t", "scale: float", "p: float"})
    .SetKernelFn(PD_KERNEL(AttentionBackward));
#endif  // UNIMO_MKL
