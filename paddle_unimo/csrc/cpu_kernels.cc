// CPU training kernels of paddle_unimo (loaded and documented by paddle_unimo/cpu_kernels.py): dropout with a
// counter-based generator and LayerNorm over the last axis, forward and backward, float32, single-threaded
// (paddle's MKL keeps its threads busy on the other cores between ops). TARGETS compiles a function for AVX2 and
// for the baseline, chosen at load time by the CPU.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "paddle/extension.h"

#define TARGETS __attribute__((target_clones("avx2", "default")))

namespace {

constexpr int64_t kLanes = 8;      // Philox counters computed side by side, so that the compiler vectorises them
constexpr int kSumLanes = 8;       // partial sums of a row, vectorised
constexpr int64_t kRowChunk = 32;  // rows whose LayerNorm weight/bias gradients are summed in float

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
TARGETS void DropoutMask(uint32_t* mask, int64_t n, float p, int64_t seed) {
  const uint32_t key0 = uint32_t(uint64_t(seed)), key1 = uint32_t(uint64_t(seed) >> 32);
  const int64_t groups = (n + 4 * kLanes - 1) / (4 * kLanes);
  const uint32_t threshold = uint32_t(std::ceil(double(p) * 16777216.0));
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

// y[i] = x[i] * scale where bit i of the mask is set, else x[i] * 0 (a product, which vectorises).
TARGETS void ApplyMask(const float* x, const uint32_t* mask, float* y, int64_t n, float scale) {
  const int64_t words = n / 32;
  for (int64_t word = 0; word < words; ++word) {
    const uint32_t bits = mask[word];
    const float* xw = x + 32 * word;
    float* yw = y + 32 * word;
    for (int j = 0; j < 32; ++j) yw[j] = xw[j] * (float((bits >> j) & 1u) * scale);
  }
  for (int64_t i = 32 * words; i < n; ++i) y[i] = x[i] * (float((mask[i >> 5] >> (i & 31)) & 1u) * scale);
}

// LayerNorm over the last axis (rows x width): y = (x - mean) * rstd * weight + bias, rstd = 1 / sqrt(var +
// epsilon), the biased variance (two passes: the mean, then the squared deviations from it); each row's mean and
// rstd are outputs for the backward.
TARGETS void LayerNormRows(const float* x, const float* w, const float* b, float* y, float* means, float* rstds,
                           int64_t rows, int64_t width, float epsilon) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * width;
    const float mu = float(LaneSum(width, [&](int64_t j) { return xr[j]; }) / width);
    const double var = LaneSum(width, [&](int64_t j) { return (xr[j] - mu) * (xr[j] - mu); }) / width;
    const float inv = float(1.0 / std::sqrt(var + epsilon));
    float* yr = y + r * width;
    for (int64_t j = 0; j < width; ++j) yr[j] = (xr[j] - mu) * inv * w[j] + b[j];
    means[r] = mu;
    rstds[r] = inv;
  }
}

// With xhat = (x - mean) * rstd and g = dy * weight: dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) per row;
// dweight = the sum over rows of dy * xhat, dbias = the sum of dy: summed in float over chunks of kRowChunk
// rows, the chunks' sums then added in double.
TARGETS void LayerNormGradRows(const float* x, const float* w, const float* means, const float* rstds,
                               const float* dy, float* dx, double* dw, double* db, int64_t rows, int64_t width) {
  std::vector<float> chunk_w(width), chunk_b(width);
  for (int64_t start = 0; start < rows; start += kRowChunk) {
    std::fill(chunk_w.begin(), chunk_w.end(), 0.0f);
    std::fill(chunk_b.begin(), chunk_b.end(), 0.0f);
    float *cw = chunk_w.data(), *cb = chunk_b.data();
    for (int64_t r = start; r < std::min(start + kRowChunk, rows); ++r) {
      const float *xr = x + r * width, *dyr = dy + r * width;
      const float mu = means[r], inv = rstds[r];
      const float mean_g = float(LaneSum(width, [&](int64_t j) { return dyr[j] * w[j]; }) / width);
      const float mean_gx =
          float(LaneSum(width, [&](int64_t j) { return dyr[j] * w[j] * ((xr[j] - mu) * inv); }) / width);
      float* dxr = dx + r * width;
      for (int64_t j = 0; j < width; ++j) {
        const float xhat = (xr[j] - mu) * inv;
        dxr[j] = inv * (dyr[j] * w[j] - mean_g - xhat * mean_gx);
        cw[j] += dyr[j] * xhat;
        cb[j] += dyr[j];
      }
    }
    for (int64_t j = 0; j < width; ++j) {
      dw[j] += cw[j];
      db[j] += cb[j];
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
