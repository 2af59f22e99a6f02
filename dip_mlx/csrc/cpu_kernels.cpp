// CPU kernels of the skip network as MLX primitives (MLX's custom-extension API).
//
// MLX's own CPU ops run on one thread and make a full pass over memory per
// op; a DIP step on the CPU spent as long in them as in its matrix products.
// These primitives cover the network's hot path with few passes, on every
// core (one pool of threads, which also splits the matrix products over a
// single-threaded BLAS when one is loaded; see gemm below):
//
//   conv          stride-1 or stride-2 convolution as one GEMM per kernel tap,
//                 read in place from a padded activation ("wide" output rows)
//   winograd_conv 3x3 stride-1 convolution as 16 GEMMs on Winograd F(2x2, 3x3)
//                 transforms of the tiles (2.25x fewer multiplications)
//   bn_act        BatchNorm with batch statistics + LeakyReLU (or none) of one
//                 or two inputs (a channel concatenation), written straight
//                 into the padded buffer the next convolution reads
//   upsample      x2 bilinear (align_corners=False) or nearest, cropped
//
// Layouts are NHWC with batch 1, float32. An activation is a buffer
// (1, Hb, Wb, C) and a region (r0, c0, h, w) of it; around the region of a
// bn_act output lies its padding, elsewhere the columns beyond w are junk
// that no kernel reads as data. Each primitive has a VJP made of primitives
// of this file.

#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <dlfcn.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "mlx/allocator.h"
#include "mlx/array.h"
#include "mlx/backend/cpu/encoder.h"
#include "mlx/ops.h"
#include "mlx/primitives.h"
#include "mlx/utils.h"

namespace nb = nanobind;
namespace mx = mlx::core;

extern "C" void cblas_sgemm(int order, int trans_a, int trans_b, int m, int n, int k, float alpha, const float* a,
                            int lda, const float* b, int ldb, float beta, float* c, int ldc);

namespace {

constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;

// Matrix products go to a single-threaded BLAS that the kernels split over their own
// threads when one is loaded (use_serial_blas), else to MLX's (threaded) BLAS from one
// thread. The first keeps the cores in one pool and avoids waking the BLAS's threads
// for every one of a step's thousand products.
using Sgemm = void (*)(int, int, int, int, int, int, float, const float*, int, const float*, int, float, float*, int);
Sgemm g_sgemm = &cblas_sgemm;
bool g_serial = false;

inline void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
                 int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {  // an empty sum: C = beta * C
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
    return;
  }
  g_sgemm(kRowMajor, ta ? kTrans : kNoTrans, tb ? kTrans : kNoTrans, static_cast<int>(m), static_cast<int>(n),
          static_cast<int>(k), 1.0f, a, static_cast<int>(lda), b, static_cast<int>(ldb), beta, c, static_cast<int>(ldc));
}

// ---------------------------------------------------------------- threads

// A fixed set of workers that the calling thread joins for each parallel loop.
// Workers sleep between loops, so they do not compete with the BLAS threads.
class Pool {
 public:
  Pool() {
    // One per core, at most 32; DIP_THREADS sets the count.
    long n = std::min<long>(std::thread::hardware_concurrency(), 32);
    if (const char* env = std::getenv("DIP_THREADS")) n = std::strtol(env, nullptr, 10);
    size_ = static_cast<int>(std::clamp(n, 1L, 256L));
    for (int i = 1; i < size_; ++i) workers_.emplace_back([this, i] { work(i); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
  }
  int size() const { return size_; }

  // Runs job(i) for i in [0, parts) spread over the threads; returns when all are done.
  void run(int parts, const std::function<void(int)>& job) {
    if (parts <= 1 || size_ == 1) {
      for (int i = 0; i < parts; ++i) job(i);
      return;
    }
    std::unique_lock<std::mutex> busy(run_mutex_, std::try_to_lock);
    if (!busy.owns_lock()) {  // another stream is using the pool: run here
      for (int i = 0; i < parts; ++i) job(i);
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = &job;
      parts_ = parts;
      next_.store(0);
      active_ = static_cast<int>(workers_.size());
      ++generation_;
    }
    wake_.notify_all();
    drain();
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return active_ == 0; });
    job_ = nullptr;
  }

 private:
  void drain() {
    for (int i = next_.fetch_add(1); i < parts_; i = next_.fetch_add(1)) (*job_)(i);
  }
  void work(int) {
    long seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
      }
      drain();
      std::lock_guard<std::mutex> lock(mutex_);
      if (--active_ == 0) done_.notify_one();
    }
  }

  int size_ = 1;
  std::vector<std::thread> workers_;
  std::mutex mutex_, run_mutex_;
  std::condition_variable wake_, done_;
  const std::function<void(int)>* job_ = nullptr;
  std::atomic<int> next_{0};
  int parts_ = 0, active_ = 0;
  long generation_ = 0;
  bool stop_ = false;
};

Pool& pool() {
  static Pool p;
  return p;
}

// Calls f(lo, hi, part) over [0, n) cut into about one piece per thread (each at least `grain`).
template <class F>
void parallel_for(int64_t n, int64_t grain, F&& f) {
  int64_t parts = std::min<int64_t>(pool().size(), std::max<int64_t>(1, n / std::max<int64_t>(grain, 1)));
  int64_t step = (n + parts - 1) / std::max<int64_t>(parts, 1);
  pool().run(static_cast<int>(parts), [&](int i) {
    int64_t lo = i * step, hi = std::min(n, lo + step);
    if (lo < hi) f(lo, hi, i);
  });
}

// An uninitialised float buffer (std::vector would zero it: a wasted pass).
using Scratch = std::unique_ptr<float[]>;
Scratch scratch(int64_t n) { return Scratch(new float[static_cast<size_t>(std::max<int64_t>(n, 1))]); }

void zero(float* p, int64_t count) {
  parallel_for(count, 1 << 16, [&](int64_t lo, int64_t hi, int) { std::memset(p + lo, 0, (hi - lo) * sizeof(float)); });
}

// The parts a batch of products is split into: one per thread with a serial BLAS, else one.
int gemm_parts() { return g_serial ? pool().size() : 1; }

// One term of a convolution as a product: C[c_off + r] (+)= A[a_off + r] op(B) for rows r in [0, n).
struct TapProduct {
  const float* a;
  int64_t a_off;
  const float* b;
  float* c;
  int64_t c_off;
};

// Sums the products of `taps` into C, each part of the threads owning a range of C's rows
// (so overlapping terms never race). `first_writes`: the first term writes (beta 0) instead
// of adding; it must then cover every row of C in [0, n).
void tap_products(const std::vector<TapProduct>& taps, int64_t n, int64_t c_rows, int64_t N, int64_t K, bool tb,
                  int64_t lda, int64_t ldb, int64_t ldc, bool first_writes) {
  int parts = gemm_parts();
  int64_t step = (c_rows + parts - 1) / parts;
  pool().run(parts, [&](int part) {
    int64_t lo = part * step, hi = std::min(c_rows, lo + step);
    for (size_t t = 0; t < taps.size(); ++t) {
      const TapProduct& p = taps[t];
      int64_t r0 = std::max<int64_t>(0, lo - p.c_off), r1 = std::min(n, hi - p.c_off);
      if (r0 >= r1) continue;
      gemm(false, tb, r1 - r0, N, K, p.a + (p.a_off + r0) * lda, lda, p.b, ldb, (t == 0 && first_writes) ? 0.0f : 1.0f,
           p.c + (p.c_off + r0) * ldc, ldc);
    }
  });
}

// Runs job(i) for i in [0, count), spread over the parts (independent products).
void each_product(int count, const std::function<void(int)>& job) {
  int parts = std::min(gemm_parts(), count);
  pool().run(parts, [&](int part) {
    for (int i = part; i < count; i += parts) job(i);
  });
}

// ---------------------------------------------------------------- geometry

struct Region {
  int r0, c0, h, w;
};

// Reflection of t into [0, n) without repeating the edge (n > the padding), as torch and mx.pad do.
inline int reflect(int t, int n) {
  while (t < 0 || t >= n) t = t < 0 ? -t : 2 * (n - 1) - t;
  return t;
}

// A convolution of a region (border >= (k-1)/2 of real padding around it).
struct ConvGeom {
  int k, stride, q;
  int Hb, Wb, C, O;  // input buffer and channels
  Region in;
  int Ho, Wo;        // output size
  int rows_q, Wg;    // grid the taps read: the buffer (stride 1) or a polyphase component (stride 2)
  int64_t base;      // stride 1: flat pixel index of the top-left tap of output (0, 0)
  int64_t n;         // output rows computed on the wide grid

  ConvGeom(int k_, int stride_, int Hb_, int Wb_, int C_, int O_, Region r)
      : k(k_), stride(stride_), q((k_ - 1) / 2), Hb(Hb_), Wb(Wb_), C(C_), O(O_), in(r) {
    int H = r.h + 2 * q, W = r.w + 2 * q;  // the padded image the convolution sees
    if (stride == 1) {
      Ho = r.h + 2 * q - k + 1;
      Wo = r.w + 2 * q - k + 1;
      Wg = Wb;
      rows_q = Hb;
      base = static_cast<int64_t>(r.r0 - q) * Wb + (r.c0 - q);
      n = static_cast<int64_t>(Ho - 1) * Wg + Wo;
    } else {
      Ho = (H - k) / 2 + 1;
      Wo = (W - k) / 2 + 1;
      rows_q = (H + 1) / 2;
      Wg = (W + 1) / 2;
      base = 0;
      n = static_cast<int64_t>(Ho - 1) * Wg + Wo;
    }
  }
  // Flat offset (in pixels of the grid) of tap (u, v), and the polyphase component it reads.
  int64_t tap_offset(int u, int v) const {
    return stride == 1 ? base + static_cast<int64_t>(u) * Wg + v : static_cast<int64_t>(u / 2) * Wg + v / 2;
  }
  int phase(int u, int v) const { return stride == 1 ? 0 : (u % 2) * 2 + v % 2; }
  int64_t phase_size() const { return static_cast<int64_t>(rows_q) * Wg * C; }
};

// The four polyphase components of the region's padded image, each (rows_q, Wg, C), zero beyond it.
void split_phases(const float* x, const ConvGeom& g, float* ph) {
  int H = g.in.h + 2 * g.q, W = g.in.w + 2 * g.q;
  int o_r = g.in.r0 - g.q, o_c = g.in.c0 - g.q;
  int64_t C = g.C;
  parallel_for(4 * g.rows_q, 8, [&](int64_t lo, int64_t hi, int) {
    for (int64_t t = lo; t < hi; ++t) {
      int p = static_cast<int>(t / g.rows_q), i = static_cast<int>(t % g.rows_q), a = p / 2, b = p % 2;
      float* dst = ph + p * g.phase_size() + static_cast<int64_t>(i) * g.Wg * C;
      int src_row = 2 * i + a;
      for (int j = 0; j < g.Wg; ++j) {
        int src_col = 2 * j + b;
        if (src_row < H && src_col < W) {
          std::memcpy(dst + j * C, x + ((static_cast<int64_t>(o_r + src_row) * g.Wb) + o_c + src_col) * C,
                      C * sizeof(float));
        } else {
          std::memset(dst + j * C, 0, C * sizeof(float));
        }
      }
    }
  });
}

// Adds the gradients of the polyphase components back into the input buffer's gradient.
void merge_phases(const float* ph, const ConvGeom& g, float* dx) {
  int H = g.in.h + 2 * g.q, W = g.in.w + 2 * g.q;
  int o_r = g.in.r0 - g.q, o_c = g.in.c0 - g.q;
  int64_t C = g.C;
  parallel_for(H, 4, [&](int64_t lo, int64_t hi, int) {
    for (int64_t r = lo; r < hi; ++r) {
      int a = r % 2, i = static_cast<int>(r / 2);
      #pragma GCC ivdep
      for (int c = 0; c < W; ++c) {
        int b = c % 2, j = c / 2, p = a * 2 + b;
        const float* src = ph + p * g.phase_size() + (static_cast<int64_t>(i) * g.Wg + j) * C;
        float* dst = dx + ((o_r + r) * g.Wb + o_c + c) * C;
        #pragma GCC ivdep
        for (int64_t ch = 0; ch < C; ++ch) dst[ch] += src[ch];
      }
    }
  });
}

// ---------------------------------------------------------------- primitives

mx::Stream cpu_stream() { return mx::to_stream(mx::Device(mx::Device::cpu)); }

void check_input(const mx::array& a, int ndim, const char* what) {
  if (a.dtype() != mx::float32) throw std::invalid_argument(std::string(what) + ": float32 only");
  if (a.ndim() != ndim) throw std::invalid_argument(std::string(what) + ": wrong number of dimensions");
}

// What every primitive here shares: CPU only; outputs allocated and registered with the encoder.
class CpuPrimitive : public mx::Primitive {
 public:
  using mx::Primitive::Primitive;
  void eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) override {
    throw std::runtime_error(std::string(name()) + ": dip's kernels run on the CPU only");
  }

 protected:
  mx::cpu::CommandEncoder& prepare(const std::vector<mx::array>& in, std::vector<mx::array>& out) {
    for (auto& o : out) o.set_data(mx::allocator::malloc(o.nbytes()));
    auto& enc = mx::cpu::get_command_encoder(stream());
    for (auto& a : in) enc.set_input_array(a);
    for (auto& o : out) enc.set_output_array(o);
    return enc;
  }
};

std::vector<int> region_vec(const Region& r) { return {r.r0, r.c0, r.h, r.w}; }

class ConvGradInput;
class ConvGradWeight;

// y = conv(x, w): x (1, Hb, Wb, C) with the region, w (O, k, k, C); y (1, Ho, Wg, O), columns >= Wo junk.
class Conv : public CpuPrimitive {
 public:
  Conv(mx::Stream s, int stride, Region r) : CpuPrimitive(s), stride_(stride), r_(r) {}
  void eval_cpu(const std::vector<mx::array>& in, std::vector<mx::array>& out) override;
  std::vector<mx::array> vjp(const std::vector<mx::array>& primals, const std::vector<mx::array>& cotangents,
                             const std::vector<int>& argnums, const std::vector<mx::array>& outputs) override;
  const char* name() const override { return "DipConv"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    auto& o = static_cast<const Conv&>(other);
    return stride_ == o.stride_ && region_vec(r_) == region_vec(o.r_);
  }
  int stride_;
  Region r_;
};

ConvGeom geom_of(const mx::array& x, const mx::array& w, int stride, Region r) {
  return ConvGeom(w.shape(1), stride, x.shape(1), x.shape(2), x.shape(3), w.shape(0), r);
}

void Conv::eval_cpu(const std::vector<mx::array>& in, std::vector<mx::array>& out) {
  auto& enc = prepare(in, out);
  ConvGeom g = geom_of(in[0], in[1], stride_, r_);
  enc.dispatch([g, x = in[0].data<float>(), w = in[1].data<float>(), y = out[0].data<float>(),
                total = out[0].size()]() {
    Scratch phases;
    const float* grid = x;
    if (g.stride == 2) {
      phases = scratch(4 * g.phase_size());
      split_phases(x, g, phases.get());
      grid = phases.get();
    }
    const int kk = g.k * g.k;
    std::vector<TapProduct> taps;
    for (int u = 0; u < g.k; ++u)
      for (int v = 0; v < g.k; ++v)
        taps.push_back({grid + g.phase(u, v) * (g.stride == 2 ? g.phase_size() : 0), g.tap_offset(u, v),
                        w + static_cast<int64_t>(u * g.k + v) * g.C, y, 0});
    tap_products(taps, g.n, g.n, g.O, g.C, true, g.C, kk * g.C, g.O, true);
    zero(y + g.n * g.O, total - g.n * g.O);
  });
}

class ConvGradInput : public CpuPrimitive {
 public:
  ConvGradInput(mx::Stream s, int stride, Region r, int Hb, int Wb)
      : CpuPrimitive(s), stride_(stride), r_(r), Hb_(Hb), Wb_(Wb) {}
  void eval_cpu(const std::vector<mx::array>& in, std::vector<mx::array>& out) override {
    auto& enc = prepare(in, out);
    auto& dy = in[0];
    auto& w = in[1];
    ConvGeom g(w.shape(1), stride_, Hb_, Wb_, w.shape(3), w.shape(0), r_);
    enc.dispatch([g, dyp = dy.data<float>(), wp = w.data<float>(), dx = out[0].data<float>(),
                  total = out[0].size()]() {
      zero(dx, total);
      Scratch phases;
      float* grid = dx;
      if (g.stride == 2) {
        phases = scratch(4 * g.phase_size());
        zero(phases.get(), 4 * g.phase_size());
        grid = phases.get();
      }
      const int kk = g.k * g.k;
      std::vector<TapProduct> taps;
      for (int u = 0; u < g.k; ++u)
        for (int v = 0; v < g.k; ++v)
          taps.push_back({dyp, 0, wp + static_cast<int64_t>(u * g.k + v) * g.C,
                          grid + g.phase(u, v) * (g.stride == 2 ? g.phase_size() : 0), g.tap_offset(u, v)});
      int64_t c_rows = g.stride == 2 ? static_cast<int64_t>(g.rows_q) * g.Wg : static_cast<int64_t>(g.Hb) * g.Wb;
      tap_products(taps, g.n, c_rows, g.C, g.O, false, g.O, kk * g.C, g.C, false);
      if (g.stride == 2) merge_phases(phases.get(), g, dx);
    });
  }
  const char* name() const override { return "DipConvGradInput"; }
  int stride_;
  Region r_;
  int Hb_, Wb_;
};

class ConvGradWeight : public CpuPrimitive {
 public:
  ConvGradWeight(mx::Stream s, int stride, Region r, int k) : CpuPrimitive(s), stride_(stride), r_(r), k_(k) {}
  void eval_cpu(const std::vector<mx::array>& in, std::vector<mx::array>& out) override {
    auto& enc = prepare(in, out);
    auto& x = in[0];
    auto& dy = in[1];
    ConvGeom g(k_, stride_, x.shape(1), x.shape(2), x.shape(3), dy.shape(3), r_);
    enc.dispatch([g, xp = x.data<float>(), dyp = dy.data<float>(), dw = out[0].data<float>()]() {
      Scratch phases;
      const float* grid = xp;
      if (g.stride == 2) {
        phases = scratch(4 * g.phase_size());
        split_phases(xp, g, phases.get());
        grid = phases.get();
      }
      const int kk = g.k * g.k;
      const int parts = gemm_parts();
      const int64_t size = static_cast<int64_t>(g.O) * kk * g.C, step = (g.n + parts - 1) / parts;
      Scratch partial = scratch(size * (parts - 1));  // part 0 writes dw itself
      pool().run(parts, [&](int part) {
        float* out = part == 0 ? dw : partial.get() + (part - 1) * size;
        int64_t r0 = part * step, r1 = std::min(g.n, r0 + step);
        for (int u = 0; u < g.k; ++u) {
          for (int v = 0; v < g.k; ++v) {
            const float* a = grid + g.phase(u, v) * (g.stride == 2 ? g.phase_size() : 0) + g.tap_offset(u, v) * g.C;
            gemm(true, false, g.O, g.C, r1 - r0, dyp + r0 * g.O, g.O, a + r0 * g.C, g.C, 0.0f,
                 out + static_cast<int64_t>(u * g.k + v) * g.C, kk * g.C);
          }
        }
      });
      for (int part = 1; part < parts; ++part) {
        const float* add = partial.get() + (part - 1) * size;
        parallel_for(size, 1 << 14, [&](int64_t lo, int64_t hi, int) {
#pragma GCC ivdep
          for (int64_t i = lo; i < hi; ++i) dw[i] += add[i];
        });
      }
    });
  }
  const char* name() const override { return "DipConvGradWeight"; }
  int stride_;
  Region r_;
  int k_;
};

std::vector<mx::array> Conv::vjp(const std::vector<mx::array>& primals, const std::vector<mx::array>& cotangents,
                                 const std::vector<int>& argnums, const std::vector<mx::array>&) {
  auto& x = primals[0];
  auto& w = primals[1];
  auto dy = mx::contiguous(cotangents[0]);
  std::vector<mx::array> grads;
  for (int arg : argnums) {
    if (arg == 0) {
      grads.push_back(mx::array(x.shape(), mx::float32,
                                std::make_shared<ConvGradInput>(stream(), stride_, r_, x.shape(1), x.shape(2)),
                                {dy, w}));
    } else {
      grads.push_back(
          mx::array(w.shape(), mx::float32, std::make_shared<ConvGradWeight>(stream(), stride_, r_, w.shape(1)),
                    {x, dy}));
    }
  }
  return grads;
}

// ---------------------------------------------------------------- Winograd F(2x2, 3x3)

// A 3x3 stride-1 convolution as 16 GEMMs in the Winograd domain (2.25x fewer
// multiplications than 9 taps): V = B^T d B of each 4x4 input tile, U = G g G^T
// of each filter, M = V U per position of the 4x4 tile, y = A^T M A. Tiles are
// processed in blocks of rows so the transformed tiles stay in cache.
struct WinoGeom {
  int Hb, Wb, C, O;
  Region in;        // border >= 1 around it
  int th, tw;       // tiles (2x2 outputs each)
  int block_rows;   // tile rows per block
  WinoGeom(int Hb_, int Wb_, int C_, int O_, Region r) : Hb(Hb_), Wb(Wb_), C(C_), O(O_), in(r) {
    th = (r.h + 1) / 2;
    tw = (r.w + 1) / 2;
    block_rows = std::max(1, std::min(th, 512 / std::max(tw, 1)));
  }
  // The padded image's pixel (i, j) (i, j from -1) as a pointer into the buffer, or null outside it.
  template <class T>
  T* at(T* x, int i, int j) const {
    if (i < -1 || j < -1 || i > in.h || j > in.w) return nullptr;
    return x + ((static_cast<int64_t>(in.r0 + i) * Wb) + in.c0 + j) * C;
  }
};

// U (16, O, C) from w (O, 3, 3, C): per output channel, contiguous over input channels.
void wino_weights(const float* w, int C, int O, float* U) {
  parallel_for(O, 4, [&](int64_t lo, int64_t hi, int) {
    for (int64_t o = lo; o < hi; ++o) {
      const float* g[3][3];
      for (int u = 0; u < 3; ++u)
        for (int v = 0; v < 3; ++v) g[u][v] = w + ((o * 3 + u) * 3 + v) * C;
      float* out[16];
      for (int xi = 0; xi < 16; ++xi) out[xi] = U + (static_cast<int64_t>(xi) * O + o) * C;
#pragma GCC ivdep
      for (int c = 0; c < C; ++c) {
        float q[4][3];
        for (int v = 0; v < 3; ++v) {
          q[0][v] = g[0][v][c];
          q[1][v] = 0.5f * (g[0][v][c] + g[1][v][c] + g[2][v][c]);
          q[2][v] = 0.5f * (g[0][v][c] - g[1][v][c] + g[2][v][c]);
          q[3][v] = g[2][v][c];
        }
        for (int r = 0; r < 4; ++r) {
          out[r * 4 + 0][c] = q[r][0];
          out[r * 4 + 1][c] = 0.5f * (q[r][0] + q[r][1] + q[r][2]);
          out[r * 4 + 2][c] = 0.5f * (q[r][0] - q[r][1] + q[r][2]);
          out[r * 4 + 3][c] = q[r][2];
        }
      }
    }
  });
}

// dw (O, 3, 3, C) from dU (16, O, C): the adjoint of wino_weights.
void wino_weights_adjoint(const float* dU, int C, int O, float* dw) {
  parallel_for(O, 4, [&](int64_t lo, int64_t hi, int) {
    for (int64_t o = lo; o < hi; ++o) {
      const float* in[16];
      for (int xi = 0; xi < 16; ++xi) in[xi] = dU + (static_cast<int64_t>(xi) * O + o) * C;
      float* g[3][3];
      for (int u = 0; u < 3; ++u)
        for (int v = 0; v < 3; ++v) g[u][v] = dw + ((o * 3 + u) * 3 + v) * C;
#pragma GCC ivdep
      for (int c = 0; c < C; ++c) {
        float dq[4][3];
        for (int r = 0; r < 4; ++r) {
          float d0 = in[r * 4 + 0][c], d1 = in[r * 4 + 1][c], d2 = in[r * 4 + 2][c], d3 = in[r * 4 + 3][c];
          dq[r][0] = d0 + 0.5f * (d1 + d2);
          dq[r][1] = 0.5f * (d1 - d2);
          dq[r][2] = 0.5f * (d1 + d2) + d3;
        }
        for (int v = 0; v < 3; ++v) {
          g[0][v][c] = dq[0][v] + 0.5f * (dq[1][v] + dq[2][v]);
          g[1][v][c] = 0.5f * (dq[1][v] - dq[2][v]);
          g[2][v][c] = 0.5f * (dq[1][v] + dq[2][v]) + dq[3][v];
        }
      }
    }
  });
}

// V (T, 16, C) of the tiles in tile rows [tr0, tr1): T = (tr1 - tr0) * tw.
void wino_input(const float* x, const WinoGeom& g, int tr0, int tr1, float* V) {
  const int64_t T = static_cast<int64_t>(tr1 - tr0) * g.tw, C = g.C;
  const std::vector<float> zeros(C, 0.0f);
  parallel_for(T, 16, [&](int64_t lo, int64_t hi, int) {
    std::vector<float> t(16 * C);
    for (int64_t k = lo; k < hi; ++k) {
      int ti = tr0 + static_cast<int>(k / g.tw), tj = static_cast<int>(k % g.tw);
      const float* d[4][4];
      for (int a = 0; a < 4; ++a)
        for (int b = 0; b < 4; ++b) {
          const float* p = g.at(x, 2 * ti - 1 + a, 2 * tj - 1 + b);
          d[a][b] = p ? p : zeros.data();
        }
      // rows: t = B^T d
      for (int b = 0; b < 4; ++b) {
        float* __restrict t0 = &t[(0 * 4 + b) * C];
        float* __restrict t1 = &t[(1 * 4 + b) * C];
        float* __restrict t2 = &t[(2 * 4 + b) * C];
        float* __restrict t3 = &t[(3 * 4 + b) * C];
        const float *d0 = d[0][b], *d1 = d[1][b], *d2 = d[2][b], *d3 = d[3][b];
        #pragma GCC ivdep
        for (int64_t c = 0; c < C; ++c) {
          t0[c] = d0[c] - d2[c];
          t1[c] = d1[c] + d2[c];
          t2[c] = d2[c] - d1[c];
          t3[c] = d1[c] - d3[c];
        }
      }
      // columns: V = t B
      for (int a = 0; a < 4; ++a) {
        const float *s0 = &t[(a * 4 + 0) * C], *s1 = &t[(a * 4 + 1) * C], *s2 = &t[(a * 4 + 2) * C],
                    *s3 = &t[(a * 4 + 3) * C];
        float* __restrict v0 = V + (k * 16 + a * 4 + 0) * C;
        float* __restrict v1 = V + (k * 16 + a * 4 + 1) * C;
        float* __restrict v2 = V + (k * 16 + a * 4 + 2) * C;
        float* __restrict v3 = V + (k * 16 + a * 4 + 3) * C;
        #pragma GCC ivdep
        for (int64_t c = 0; c < C; ++c) {
          v0[c] = s0[c] - s2[c];
          v1[c] = s1[c] + s2[c];
          v2[c] = s2[c] - s1[c];
          v3[c] = s1[c] - s3[c];
        }
      }
    }
  });
}

// Adds the adjoint of wino_input (B dV B^T of each tile) into dx; tiles overlap, so even
// and odd tile rows go in two rounds.
void wino_input_adjoint(const float* dV, const WinoGeom& g, int tr0, int tr1, float* dx) {
  const int64_t T = static_cast<int64_t>(tr1 - tr0) * g.tw, C = g.C;
  for (int parity = 0; parity < 2; ++parity) {
    int first = tr0 + ((tr0 % 2 == parity) ? 0 : 1);
    int64_t rows = first < tr1 ? (tr1 - first + 1) / 2 : 0;
    parallel_for(rows, 1, [&](int64_t lo, int64_t hi, int) {
      std::vector<float> t(16 * C), sink(C);  // sink: what falls outside the padded image
      for (int64_t rr = lo; rr < hi; ++rr) {
        int ti = first + static_cast<int>(2 * rr);
        for (int tj = 0; tj < g.tw; ++tj) {
          int64_t k = static_cast<int64_t>(ti - tr0) * g.tw + tj;
          // columns: t = dV B^T
          for (int a = 0; a < 4; ++a) {
            const float* v0 = dV + (k * 16 + a * 4 + 0) * C;
            const float* v1 = dV + (k * 16 + a * 4 + 1) * C;
            const float* v2 = dV + (k * 16 + a * 4 + 2) * C;
            const float* v3 = dV + (k * 16 + a * 4 + 3) * C;
            float *t0 = &t[(a * 4 + 0) * C], *t1 = &t[(a * 4 + 1) * C], *t2 = &t[(a * 4 + 2) * C],
                  *t3 = &t[(a * 4 + 3) * C];
            #pragma GCC ivdep
            for (int64_t c = 0; c < C; ++c) {
              t0[c] = v0[c];
              t1[c] = v1[c] - v2[c] + v3[c];
              t2[c] = -v0[c] + v1[c] + v2[c];
              t3[c] = -v3[c];
            }
          }
          // rows: dd = B t, added into the tile's pixels
          for (int b = 0; b < 4; ++b) {
            const float *s0 = &t[(0 * 4 + b) * C], *s1 = &t[(1 * 4 + b) * C], *s2 = &t[(2 * 4 + b) * C],
                        *s3 = &t[(3 * 4 + b) * C];
            float* d[4];
            for (int a = 0; a < 4; ++a) {
              float* p = g.at(dx, 2 * ti - 1 + a, 2 * tj - 1 + b);
              d[a] = p ? p : sink.data();
            }
            float *__restrict d0 = d[0], *__restrict d1 = d[1], *__restrict d2 = d[2], *__restrict d3 = d[3];
            if (d0 == d1 || d0 == d2 || d0 == d3 || d1 == d2 || d1 == d3 || d2 == d3) {  // several in the sink
              #pragma GCC ivdep
              for (int64_t c = 0; c < C; ++c) {
                d[0][c] += s0[c];
                d[1][c] += s1[c] - s2[c] + s3[c];
                d[2][c] += -s0[c] + s1[c] + s2[c];
                d[3][c] += -s3[c];
              }
            } else {
              #pragma GCC ivdep
              for (int64_t c = 0; c < C; ++c) {
                d0[c] += s0[c];
                d1[c] += s1[c] - s2[c] + s3[c];
                d2[c] += -s0[c] + s1[c] + s2[c];
                d3[c] += -s3[c];
              }
            }
          }
        }
      }
    });
  }
}

// y (1, h, w, O) from M (T, 16, O) of tile rows [tr0, tr1): y = A^T M A, cropped.
void wino_output(const float* M, const WinoGeom& g, int tr0, int tr1, float* y) {
  const int64_t T = static_cast<int64_t>(tr1 - tr0) * g.tw, O = g.O;
  parallel_for(T, 16, [&](int64_t lo, int64_t hi, int) {
    std::vector<float> s(8 * O);
    for (int64_t k = lo; k < hi; ++k) {
      int ti = tr0 + static_cast<int>(k / g.tw), tj = static_cast<int>(k % g.tw);
      for (int b = 0; b < 4; ++b) {
        const float* m0 = M + (k * 16 + 0 * 4 + b) * O;
        const float* m1 = M + (k * 16 + 1 * 4 + b) * O;
        const float* m2 = M + (k * 16 + 2 * 4 + b) * O;
        const float* m3 = M + (k * 16 + 3 * 4 + b) * O;
        float *s0 = &s[(0 * 4 + b) * O], *s1 = &s[(1 * 4 + b) * O];
        #pragma GCC ivdep
        for (int64_t o = 0; o < O; ++o) {
          s0[o] = m0[o] + m1[o] + m2[o];
          s1[o] = m1[o] - m2[o] - m3[o];
        }
      }
      for (int a = 0; a < 2; ++a) {
        int i = 2 * ti + a;
        if (i >= g.in.h) continue;
        const float *q0 = &s[(a * 4 + 0) * O], *q1 = &s[(a * 4 + 1) * O], *q2 = &s[(a * 4 + 2) * O],
                    *q3 = &s[(a * 4 + 3) * O];
        float* row = y + static_cast<int64_t>(i) * g.in.w * O;
        float* y0 = row + static_cast<int64_t>(2 * tj) * O;
        #pragma GCC ivdep
        for (int64_t o = 0; o < O; ++o) y0[o] = q0[o] + q1[o] + q2[o];
        if (2 * tj + 1 < g.in.w) {
          float* y1 = y0 + O;
          #pragma GCC ivdep
          for (int64_t o = 0; o < O; ++o) y1[o] = q1[o] - q2[o] - q3[o];
        }
      }
    }
  });
}

// dM (T, 16, O) = A dY A^T of the tiles in tile rows [tr0, tr1) (outputs beyond the image are zero).
void wino_output_adjoint(const float* dy, const WinoGeom& g, int tr0, int tr1, float* dM) {
  const int64_t T = static_cast<int64_t>(tr1 - tr0) * g.tw, O = g.O;
  parallel_for(T, 16, [&](int64_t lo, int64_t hi, int) {
    std::vector<float> zeros(O, 0.0f), s(8 * O);
    for (int64_t k = lo; k < hi; ++k) {
      int ti = tr0 + static_cast<int>(k / g.tw), tj = static_cast<int>(k % g.tw);
      const float* e[2][2];
      for (int a = 0; a < 2; ++a)
        for (int b = 0; b < 2; ++b) {
          int i = 2 * ti + a, j = 2 * tj + b;
          e[a][b] = (i < g.in.h && j < g.in.w) ? dy + (static_cast<int64_t>(i) * g.in.w + j) * O : zeros.data();
        }
      // columns: s[a][.] = A e[a]  (m0 = y0, m1 = y0 + y1, m2 = y0 - y1, m3 = -y1)
      for (int a = 0; a < 2; ++a) {
        float *s0 = &s[(a * 4 + 0) * O], *s1 = &s[(a * 4 + 1) * O], *s2 = &s[(a * 4 + 2) * O],
              *s3 = &s[(a * 4 + 3) * O];
        const float *y0 = e[a][0], *y1 = e[a][1];
        #pragma GCC ivdep
        for (int64_t o = 0; o < O; ++o) {
          s0[o] = y0[o];
          s1[o] = y0[o] + y1[o];
          s2[o] = y0[o] - y1[o];
          s3[o] = -y1[o];
        }
      }
      for (int b = 0; b < 4; ++b) {
        const float *r0 = &s[(0 * 4 + b) * O], *r1 = &s[(1 * 4 + b) * O];
        float* m0 = dM + (k * 16 + 0 * 4 + b) * O;
        float* m1 = dM + (k * 16 + 1 * 4 + b) * O;
        float* m2 = dM + (k * 16 + 2 * 4 + b) * O;
        float* m3 = dM + (k * 16 + 3 * 4 + b) * O;
        #pragma GCC ivdep
        for (int64_t o = 0; o < O; ++o) {
          m0[o] = r0[o];
          m1[o] = r0[o] + r1[o];
          m2[o] = r0[o] - r1[o];
          m3[o] = -r1[o];
        }
      }
    }
  });
}

class WinoConvGrad;

// y (1, h, w, O) = conv3x3(x, w) over the region (border >= 1), compact.
class WinoConv : public CpuPrimitive {
 public:
  WinoConv(mx::Stream s, Region r) : CpuPrimitive(s), r_(r) {}
  void eval_cpu(const std::vector<mx::array>& in, std::vector<mx::array>& out) override {
    auto& enc = prepare(in, out);
    WinoGeom g(in[0].shape(1), in[0].shape(2), in[0].shape(3), in[1].shape(0), r_);
    enc.dispatch([g, x = in[0].data<float>(), w = in[1].data<float>(), y = out[0].data<float>()]() {
      Scratch U = scratch(16 * static_cast<int64_t>(g.C) * g.O);
      wino_weights(w, g.C, g.O, U.get());
      const int64_t Tmax = static_cast<int64_t>(g.block_rows) * g.tw;
      Scratch V = scratch(16 * Tmax * g.C), M = scratch(16 * Tmax * g.O);
      for (int tr0 = 0; tr0 < g.th; tr0 += g.block_rows) {
        int tr1 = std::min(g.th, tr0 + g.block_rows);
        int T = (tr1 - tr0) * g.tw;
        wino_input(x, g, tr0, tr1, V.get());
        each_product(16, [&](int xi) {  // M = V U^T at each of the 16 positions; tiles are rows 16 apart
          gemm(false, true, T, g.O, g.C, V.get() + xi * g.C, 16 * g.C, U.get() + xi * static_cast<int64_t>(g.C) * g.O,
               g.C, 0.0f, M.get() + xi * g.O, 16 * g.O);
        });
        wino_output(M.get(), g, tr0, tr1, y);
      }
    });
  }
  std::vector<mx::array> vjp(const std::vector<mx::array>& primals, const std::vector<mx::array>& cotangents,
                             const std::vector<int>& argnums, const std::vector<mx::array>& outputs) override;
  const char* name() const override { return "DipWinoConv"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    return region_vec(r_) == region_vec(static_cast<const WinoConv&>(other).r_);
  }
  Region r_;
};

// Both gradients of WinoConv in one sweep over the tiles: dx (x's buffer) and dw.
class WinoConvGrad : public CpuPrimitive {
 public:
  WinoConvGrad(mx::Stream s, Region r) : CpuPrimitive(s), r_(r) {}
  // inputs: x, w, dy
  void eval_cpu(const std::vector<mx::array>& in, std::vector<mx::array>& out) override {
    auto& enc = prepare(in, out);
    WinoGeom g(in[0].shape(1), in[0].shape(2), in[0].shape(3), in[1].shape(0), r_);
    enc.dispatch([g, x = in[0].data<float>(), w = in[1].data<float>(), dy = in[2].data<float>(),
                  dx = out[0].data<float>(), dw = out[1].data<float>(), dx_size = out[0].size()]() {
      const int64_t CO = static_cast<int64_t>(g.C) * g.O;
      Scratch U = scratch(16 * CO), dU = scratch(16 * CO);
      wino_weights(w, g.C, g.O, U.get());
      zero(dx, dx_size);
      const int64_t Tmax = static_cast<int64_t>(g.block_rows) * g.tw;
      Scratch V = scratch(16 * Tmax * g.C), dM = scratch(16 * Tmax * g.O);
      bool first = true;
      for (int tr0 = 0; tr0 < g.th; tr0 += g.block_rows) {
        int tr1 = std::min(g.th, tr0 + g.block_rows);
        int T = (tr1 - tr0) * g.tw;
        wino_output_adjoint(dy, g, tr0, tr1, dM.get());
        wino_input(x, g, tr0, tr1, V.get());
        each_product(16, [&](int xi) {
          // dU += dM^T V, then dV = dM U into V's storage (V is read first: same position, same thread)
          gemm(true, false, g.O, g.C, T, dM.get() + xi * g.O, 16 * g.O, V.get() + xi * g.C, 16 * g.C,
               first ? 0.0f : 1.0f, dU.get() + xi * CO, g.C);
          gemm(false, false, T, g.C, g.O, dM.get() + xi * g.O, 16 * g.O, U.get() + xi * CO, g.C, 0.0f,
               V.get() + xi * g.C, 16 * g.C);
        });
        first = false;
        wino_input_adjoint(V.get(), g, tr0, tr1, dx);
      }
      wino_weights_adjoint(dU.get(), g.C, g.O, dw);
    });
  }
  const char* name() const override { return "DipWinoConvGrad"; }
  Region r_;
};

std::vector<mx::array> WinoConv::vjp(const std::vector<mx::array>& primals, const std::vector<mx::array>& cotangents,
                                     const std::vector<int>& argnums, const std::vector<mx::array>&) {
  auto grads = mx::array::make_arrays({primals[0].shape(), primals[1].shape()}, {mx::float32, mx::float32},
                                      std::make_shared<WinoConvGrad>(stream(), r_),
                                      {primals[0], primals[1], mx::contiguous(cotangents[0])});
  std::vector<mx::array> picked;
  for (int arg : argnums) picked.push_back(grads[arg]);
  return picked;
}

// ---------------------------------------------------------------- BatchNorm + activation

// One or two inputs whose channels are concatenated, all with regions of the same size.
struct BnGeom {
  int parts;
  int h, w, C;
  int pad;       // output padding
  bool reflect;  // reflection, else zero padding
  float slope;   // 1: no activation
  int Wb[2], Cp[2], coff[2];
  Region r[2];
  int64_t in_offset(int p, int i, int j) const {
    return (static_cast<int64_t>(r[p].r0 + i) * Wb[p] + r[p].c0 + j) * Cp[p];
  }
};

BnGeom bn_geom(const std::vector<mx::array>& ys, const std::vector<Region>& regions, int pad, bool reflect,
               float slope) {
  BnGeom g{};
  g.parts = static_cast<int>(ys.size());
  g.h = regions[0].h;
  g.w = regions[0].w;
  g.pad = pad;
  g.reflect = reflect;
  g.slope = slope;
  int c = 0;
  for (int p = 0; p < g.parts; ++p) {
    g.r[p] = regions[p];
    g.Wb[p] = ys[p].shape(2);
    g.Cp[p] = ys[p].shape(3);
    g.coff[p] = c;
    c += g.Cp[p];
  }
  g.C = c;
  return g;
}

// Per-channel sums of x and x^2 over the regions (double), one row of partial sums per thread part.
void bn_stats(const BnGeom& g, const float* const* ys, double* mean, double* var) {
  int parts = pool().size();
  std::vector<double> acc(2 * static_cast<size_t>(g.C) * parts, 0.0);
  parallel_for(g.h, 1, [&](int64_t lo, int64_t hi, int part) {
    double* s = acc.data() + 2 * static_cast<size_t>(g.C) * part;
    double* q = s + g.C;
    for (int64_t i = lo; i < hi; ++i) {
      for (int p = 0; p < g.parts; ++p) {
        const int cp = g.Cp[p], off = g.coff[p];
        for (int j = 0; j < g.w; ++j) {
          const float* row = ys[p] + g.in_offset(p, static_cast<int>(i), j);
          #pragma GCC ivdep
          for (int c = 0; c < cp; ++c) {
            double v = row[c];
            s[off + c] += v;
            q[off + c] += v * v;
          }
        }
      }
    }
  });
  const double n = static_cast<double>(g.h) * g.w;
  #pragma GCC ivdep
  for (int c = 0; c < g.C; ++c) {
    double s = 0, q = 0;
    for (int t = 0; t < parts; ++t) {
      s += acc[2 * static_cast<size_t>(g.C) * t + c];
      q += acc[2 * static_cast<size_t>(g.C) * t + g.C + c];
    }
    mean[c] = s / n;
    var[c] = std::max(0.0, q / n - mean[c] * mean[c]);
  }
}

class BnActGrad;

// out (1, h+2p, w+2p, C) = pad(act(BN(concat(ys)))), mean (C), invstd (C).
class BnAct : public CpuPrimitive {
 public:
  BnAct(mx::Stream s, std::vector<Region> r, int pad, bool reflect, float slope, float eps)
      : CpuPrimitive(s), r_(std::move(r)), pad_(pad), reflect_(reflect), slope_(slope), eps_(eps) {}
  void eval_cpu(const std::vector<mx::array>& in, std::vector<mx::array>& out) override {
    auto& enc = prepare(in, out);
    int parts = static_cast<int>(r_.size());
    std::vector<mx::array> ys(in.begin(), in.begin() + parts);
    BnGeom g = bn_geom(ys, r_, pad_, reflect_, slope_);
    const float* y0 = in[0].data<float>();
    const float* y1 = parts > 1 ? in[1].data<float>() : nullptr;
    enc.dispatch([g, y0, y1, gamma = in[parts].data<float>(), beta = in[parts + 1].data<float>(),
                  o = out[0].data<float>(), mean_out = out[1].data<float>(), inv_out = out[2].data<float>(),
                  eps = eps_]() {
      const float* ys[2] = {y0, y1};
      std::vector<double> mean(g.C), var(g.C);
      bn_stats(g, ys, mean.data(), var.data());
      std::vector<float> a(g.C), b(g.C);
      #pragma GCC ivdep
      for (int c = 0; c < g.C; ++c) {
        float inv = 1.0f / std::sqrt(static_cast<float>(var[c]) + eps);
        mean_out[c] = static_cast<float>(mean[c]);
        inv_out[c] = inv;
        a[c] = gamma[c] * inv;
        b[c] = beta[c] - static_cast<float>(mean[c]) * a[c];
      }
      const int Ho = g.h + 2 * g.pad, Wo = g.w + 2 * g.pad;
      parallel_for(Ho, 1, [&](int64_t lo, int64_t hi, int) {
        for (int64_t oi = lo; oi < hi; ++oi) {
          float* orow = o + oi * Wo * g.C;
          int i = static_cast<int>(oi) - g.pad;
          if (!g.reflect && (i < 0 || i >= g.h)) {
            std::memset(orow, 0, sizeof(float) * Wo * g.C);
            continue;
          }
          i = reflect(i, g.h);
          for (int oj = 0; oj < Wo; ++oj) {
            float* dst = orow + static_cast<int64_t>(oj) * g.C;
            int j = oj - g.pad;
            if (!g.reflect && (j < 0 || j >= g.w)) {
              std::memset(dst, 0, sizeof(float) * g.C);
              continue;
            }
            j = reflect(j, g.w);
            for (int p = 0; p < g.parts; ++p) {
              const float* src = ys[p] + g.in_offset(p, i, j);
              const float* ap = a.data() + g.coff[p];
              const float* bp = b.data() + g.coff[p];
              float* d = dst + g.coff[p];
              const float slope = g.slope;
              #pragma GCC ivdep
              for (int c = 0; c < g.Cp[p]; ++c) {
                float v = ap[c] * src[c] + bp[c];
                d[c] = v > 0.0f ? v : slope * v;
              }
            }
          }
        }
      });
    });
  }
  std::vector<mx::array> vjp(const std::vector<mx::array>& primals, const std::vector<mx::array>& cotangents,
                             const std::vector<int>& argnums, const std::vector<mx::array>& outputs) override;
  const char* name() const override { return "DipBnAct"; }
  std::vector<Region> r_;
  int pad_;
  bool reflect_;
  float slope_, eps_;
};

// For interior row i: the padded-output rows that map to it (itself and its mirrors).
std::vector<std::vector<int>> preimages(int n, int pad, bool reflect_mode) {
  std::vector<std::vector<int>> pre(n);
  for (int t = 0; t < n + 2 * pad; ++t) {
    int s = t - pad;
    if (s < 0 || s >= n) {
      if (!reflect_mode) continue;
      s = reflect(s, n);
    }
    pre[s].push_back(t);
  }
  return pre;
}

// Gradients of BnAct: dys (each input's buffer, zero outside its region), dgamma, dbeta.
class BnActGrad : public CpuPrimitive {
 public:
  BnActGrad(mx::Stream s, std::vector<Region> r, int pad, bool reflect, float slope)
      : CpuPrimitive(s), r_(std::move(r)), pad_(pad), reflect_(reflect), slope_(slope) {}
  // inputs: dout, ys..., gamma, beta, mean, invstd
  void eval_cpu(const std::vector<mx::array>& in, std::vector<mx::array>& out) override {
    auto& enc = prepare(in, out);
    int parts = static_cast<int>(r_.size());
    std::vector<mx::array> ys(in.begin() + 1, in.begin() + 1 + parts);
    BnGeom g = bn_geom(ys, r_, pad_, reflect_, slope_);
    const float* y0 = in[1].data<float>();
    const float* y1 = parts > 1 ? in[2].data<float>() : nullptr;
    float* d0 = out[0].data<float>();
    float* d1 = parts > 1 ? out[1].data<float>() : nullptr;
    int64_t n0 = out[0].size(), n1 = parts > 1 ? out[1].size() : 0;
    enc.dispatch([g, y0, y1, d0, d1, n0, n1, dout = in[0].data<float>(), gamma = in[1 + parts].data<float>(),
                  beta = in[2 + parts].data<float>(), mean = in[3 + parts].data<float>(),
                  invstd = in[4 + parts].data<float>(), dgamma = out[parts].data<float>(),
                  dbeta = out[parts + 1].data<float>()]() {
      const float* ys[2] = {y0, y1};
      float* ds[2] = {d0, d1};
      const int Wo = g.w + 2 * g.pad;
      auto rows = preimages(g.h, g.pad, g.reflect);
      auto cols = preimages(g.w, g.pad, g.reflect);
      std::vector<float> a(g.C), b(g.C);
      #pragma GCC ivdep
      for (int c = 0; c < g.C; ++c) {
        a[c] = gamma[c] * invstd[c];
        b[c] = beta[c] - mean[c] * a[c];
      }
      // The gradient at BatchNorm's output for interior row i: padding folded back, through the activation.
      auto fold_row = [&](int i, float* grow) {
        if (g.pad == 0) {
          std::memcpy(grow, dout + static_cast<int64_t>(i) * g.w * g.C, sizeof(float) * g.w * g.C);
        } else {
          std::memset(grow, 0, sizeof(float) * g.w * g.C);
          for (int t : rows[i]) {
            const float* drow = dout + static_cast<int64_t>(t) * Wo * g.C;
            for (int j = 0; j < g.w; ++j) {
              float* __restrict gj = grow + static_cast<int64_t>(j) * g.C;
              for (int s : cols[j]) {
                const float* src = drow + static_cast<int64_t>(s) * g.C;
                #pragma GCC ivdep
                for (int c = 0; c < g.C; ++c) gj[c] += src[c];
              }
            }
          }
        }
        if (g.slope != 1.0f) {
          for (int p = 0; p < g.parts; ++p) {
            const float* ap = a.data() + g.coff[p];
            const float* bp = b.data() + g.coff[p];
            const float slope = g.slope;
            for (int j = 0; j < g.w; ++j) {
              const float* src = ys[p] + g.in_offset(p, i, j);
              float* __restrict gj = grow + static_cast<int64_t>(j) * g.C + g.coff[p];
              #pragma GCC ivdep
              for (int c = 0; c < g.Cp[p]; ++c) gj[c] *= (ap[c] * src[c] + bp[c] > 0.0f) ? 1.0f : slope;
            }
          }
        }
      };
      int nparts = pool().size();
      std::vector<double> acc(2 * static_cast<size_t>(g.C) * nparts, 0.0);
      parallel_for(g.h, 1, [&](int64_t lo, int64_t hi, int part) {
        Scratch grow = scratch(static_cast<int64_t>(g.w) * g.C), row = scratch(2 * static_cast<int64_t>(g.C));
        double* sg = acc.data() + 2 * static_cast<size_t>(g.C) * part;
        double* sgx = sg + g.C;
        for (int64_t i = lo; i < hi; ++i) {
          fold_row(static_cast<int>(i), grow.get());
          float* __restrict rs = row.get();  // this row's sums in float, then into the double totals
          float* __restrict rsx = rs + g.C;
          std::memset(rs, 0, sizeof(float) * 2 * g.C);
          for (int p = 0; p < g.parts; ++p) {
            const int off = g.coff[p];
            for (int j = 0; j < g.w; ++j) {
              const float* src = ys[p] + g.in_offset(p, static_cast<int>(i), j);
              const float* gj = grow.get() + static_cast<int64_t>(j) * g.C + off;
              #pragma GCC ivdep
              for (int c = 0; c < g.Cp[p]; ++c) {
                rs[off + c] += gj[c];
                rsx[off + c] += gj[c] * ((src[c] - mean[off + c]) * invstd[off + c]);
              }
            }
          }
          #pragma GCC ivdep
          for (int c = 0; c < g.C; ++c) {
            sg[c] += rs[c];
            sgx[c] += rsx[c];
          }
        }
      });
      const double n = static_cast<double>(g.h) * g.w;
      std::vector<float> k1(g.C), k2(g.C), scale(g.C);
      #pragma GCC ivdep
      for (int c = 0; c < g.C; ++c) {
        double s = 0, sx = 0;
        for (int t = 0; t < nparts; ++t) {
          s += acc[2 * static_cast<size_t>(g.C) * t + c];
          sx += acc[2 * static_cast<size_t>(g.C) * t + g.C + c];
        }
        dbeta[c] = static_cast<float>(s);
        dgamma[c] = static_cast<float>(sx);
        k1[c] = static_cast<float>(s / n);
        k2[c] = static_cast<float>(sx / n);
        scale[c] = gamma[c] * invstd[c];
      }
      // Zero what lies outside each region (a convolution reads those columns as data).
      for (int p = 0; p < g.parts; ++p) {
        int64_t row_len = static_cast<int64_t>(g.Wb[p]) * g.Cp[p];
        int64_t rows_total = (p == 0 ? n0 : n1) / row_len;
        zero(ds[p], g.r[p].r0 * row_len);
        zero(ds[p] + (g.r[p].r0 + g.h) * row_len, (rows_total - g.r[p].r0 - g.h) * row_len);
      }
      parallel_for(g.h, 1, [&](int64_t lo, int64_t hi, int) {
        Scratch grow = scratch(static_cast<int64_t>(g.w) * g.C);
        for (int64_t i = lo; i < hi; ++i) {
          fold_row(static_cast<int>(i), grow.get());
          for (int p = 0; p < g.parts; ++p) {
            const int off = g.coff[p];
            int64_t row_start = g.in_offset(p, static_cast<int>(i), 0) - static_cast<int64_t>(g.r[p].c0) * g.Cp[p];
            std::memset(ds[p] + row_start, 0, sizeof(float) * g.r[p].c0 * g.Cp[p]);
            int64_t after = g.in_offset(p, static_cast<int>(i), g.w);
            std::memset(ds[p] + after, 0, sizeof(float) * (g.Wb[p] - g.r[p].c0 - g.w) * g.Cp[p]);
            for (int j = 0; j < g.w; ++j) {
              int64_t at = g.in_offset(p, static_cast<int>(i), j);
              const float* src = ys[p] + at;
              float* __restrict dst = ds[p] + at;
              const float* gj = grow.get() + static_cast<int64_t>(j) * g.C + off;
              #pragma GCC ivdep
              for (int c = 0; c < g.Cp[p]; ++c) {
                float xhat = (src[c] - mean[off + c]) * invstd[off + c];
                dst[c] = scale[off + c] * (gj[c] - k1[off + c] - xhat * k2[off + c]);
              }
            }
          }
        }
      });
    });
  }
  const char* name() const override { return "DipBnActGrad"; }
  std::vector<Region> r_;
  int pad_;
  bool reflect_;
  float slope_;
};

std::vector<mx::array> BnAct::vjp(const std::vector<mx::array>& primals, const std::vector<mx::array>& cotangents,
                                  const std::vector<int>& argnums, const std::vector<mx::array>& outputs) {
  int parts = static_cast<int>(r_.size());
  std::vector<mx::array> inputs = {mx::contiguous(cotangents[0])};
  std::vector<mx::Shape> shapes;
  std::vector<mx::Dtype> dtypes;
  for (int p = 0; p < parts; ++p) {
    inputs.push_back(primals[p]);
    shapes.push_back(primals[p].shape());
    dtypes.push_back(mx::float32);
  }
  inputs.push_back(primals[parts]);      // gamma
  inputs.push_back(primals[parts + 1]);  // beta
  inputs.push_back(outputs[1]);          // mean
  inputs.push_back(outputs[2]);          // invstd
  int C = primals[parts].shape(0);
  shapes.push_back({C});
  shapes.push_back({C});
  dtypes.push_back(mx::float32);
  dtypes.push_back(mx::float32);
  auto grads = mx::array::make_arrays(shapes, dtypes,
                                      std::make_shared<BnActGrad>(stream(), r_, pad_, reflect_, slope_), inputs);
  std::vector<mx::array> picked;
  for (int arg : argnums) picked.push_back(grads[arg]);
  return picked;
}

// ---------------------------------------------------------------- upsampling

// The taps of x2 upsampling along one axis: output o reads (src0, w0) and (src1, w1).
struct Taps {
  std::vector<int> s0, s1;
  std::vector<float> w0, w1;
};

Taps up_taps(int n, int out_n, bool bilinear) {
  Taps t;
  #pragma GCC ivdep
  for (int o = 0; o < out_n; ++o) {
    int i = o / 2;
    if (!bilinear) {
      t.s0.push_back(i), t.s1.push_back(i), t.w0.push_back(1.0f), t.w1.push_back(0.0f);
    } else {
      int other = o % 2 == 0 ? std::max(i - 1, 0) : std::min(i + 1, n - 1);
      t.s0.push_back(i), t.s1.push_back(other), t.w0.push_back(0.75f), t.w1.push_back(0.25f);
    }
  }
  return t;
}

// out (1, Ho, Wo, C): x2 upsampling of the region, cropped to (Ho, Wo).
class Upsample : public CpuPrimitive {
 public:
  Upsample(mx::Stream s, Region r, bool bilinear) : CpuPrimitive(s), r_(r), bilinear_(bilinear) {}
  void eval_cpu(const std::vector<mx::array>& in, std::vector<mx::array>& out) override {
    auto& enc = prepare(in, out);
    int Ho = out[0].shape(1), Wo = out[0].shape(2), C = out[0].shape(3), Wb = in[0].shape(2);
    enc.dispatch([r = r_, bl = bilinear_, Ho, Wo, C, Wb, x = in[0].data<float>(), y = out[0].data<float>()]() {
      Taps tr = up_taps(r.h, Ho, bl), tc = up_taps(r.w, Wo, bl);
      parallel_for(Ho, 1, [&](int64_t lo, int64_t hi, int) {
        for (int64_t o = lo; o < hi; ++o) {
          const float* ra = x + (static_cast<int64_t>(r.r0 + tr.s0[o]) * Wb + r.c0) * C;
          const float* rb = x + (static_cast<int64_t>(r.r0 + tr.s1[o]) * Wb + r.c0) * C;
          float wa = tr.w0[o], wb = tr.w1[o];
          for (int q = 0; q < Wo; ++q) {
            const int64_t ca = static_cast<int64_t>(tc.s0[q]) * C, cb = static_cast<int64_t>(tc.s1[q]) * C;
            float va = tc.w0[q], vb = tc.w1[q];
            float* dst = y + (o * Wo + q) * C;
            #pragma GCC ivdep
            for (int c = 0; c < C; ++c) {
              dst[c] = wa * (va * ra[ca + c] + vb * ra[cb + c]) + wb * (va * rb[ca + c] + vb * rb[cb + c]);
            }
          }
        }
      });
    });
  }
  std::vector<mx::array> vjp(const std::vector<mx::array>& primals, const std::vector<mx::array>& cotangents,
                             const std::vector<int>& argnums, const std::vector<mx::array>& outputs) override;
  const char* name() const override { return "DipUpsample"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    auto& o = static_cast<const Upsample&>(other);
    return bilinear_ == o.bilinear_ && region_vec(r_) == region_vec(o.r_);
  }
  Region r_;
  bool bilinear_;
};

// The adjoint of one axis's taps: for input i, the outputs (and weights) that read it.
struct Adjoint {
  std::vector<std::vector<std::pair<int, float>>> from;
};

Adjoint adjoint(const Taps& t, int n) {
  Adjoint a;
  a.from.resize(n);
  for (size_t o = 0; o < t.s0.size(); ++o) {
    if (t.w0[o] != 0.0f) a.from[t.s0[o]].push_back({static_cast<int>(o), t.w0[o]});
    if (t.w1[o] != 0.0f) a.from[t.s1[o]].push_back({static_cast<int>(o), t.w1[o]});
  }
  return a;
}

class UpsampleGrad : public CpuPrimitive {
 public:
  UpsampleGrad(mx::Stream s, Region r, bool bilinear) : CpuPrimitive(s), r_(r), bilinear_(bilinear) {}
  void eval_cpu(const std::vector<mx::array>& in, std::vector<mx::array>& out) override {
    auto& enc = prepare(in, out);
    int Ho = in[0].shape(1), Wo = in[0].shape(2), C = in[0].shape(3), Wb = out[0].shape(2);
    enc.dispatch([r = r_, bl = bilinear_, Ho, Wo, C, Wb, dy = in[0].data<float>(), dx = out[0].data<float>(),
                  total = out[0].size()]() {
      Adjoint ar = adjoint(up_taps(r.h, Ho, bl), r.h), ac = adjoint(up_taps(r.w, Wo, bl), r.w);
      zero(dx, total);
      parallel_for(r.h, 1, [&](int64_t lo, int64_t hi, int) {
        std::vector<float> row(static_cast<size_t>(Wo) * C);
        for (int64_t i = lo; i < hi; ++i) {
          std::fill(row.begin(), row.end(), 0.0f);
          for (auto [o, wr] : ar.from[i]) {
            const float* src = dy + static_cast<int64_t>(o) * Wo * C;
            for (int64_t t = 0; t < static_cast<int64_t>(Wo) * C; ++t) row[t] += wr * src[t];
          }
          float* dst_row = dx + (static_cast<int64_t>(r.r0 + i) * Wb + r.c0) * C;
          for (int j = 0; j < r.w; ++j) {
            float* dst = dst_row + static_cast<int64_t>(j) * C;
            for (auto [q, wc] : ac.from[j]) {
              const float* src = row.data() + static_cast<int64_t>(q) * C;
              #pragma GCC ivdep
              for (int c = 0; c < C; ++c) dst[c] += wc * src[c];
            }
          }
        }
      });
    });
  }
  const char* name() const override { return "DipUpsampleGrad"; }
  Region r_;
  bool bilinear_;
};

std::vector<mx::array> Upsample::vjp(const std::vector<mx::array>& primals, const std::vector<mx::array>& cotangents,
                                     const std::vector<int>&, const std::vector<mx::array>&) {
  return {mx::array(primals[0].shape(), mx::float32, std::make_shared<UpsampleGrad>(stream(), r_, bilinear_),
                    {mx::contiguous(cotangents[0])})};
}

// ---------------------------------------------------------------- ops

Region to_region(const std::vector<int>& r) {
  if (r.size() != 4) throw std::invalid_argument("a region is (r0, c0, h, w)");
  return {r[0], r[1], r[2], r[3]};
}

mx::array winograd_conv(const mx::array& x, const mx::array& w, const std::vector<int>& region) {
  check_input(x, 4, "winograd_conv input");
  check_input(w, 4, "winograd_conv weight");
  Region r = to_region(region);
  if (x.shape(0) != 1 || w.shape(1) != 3 || w.shape(2) != 3 || w.shape(3) != x.shape(3))
    throw std::invalid_argument("winograd_conv: batch 1, 3x3 kernels, matching channels");
  if (r.r0 < 1 || r.c0 < 1 || r.r0 + r.h + 1 > x.shape(1) || r.c0 + r.w + 1 > x.shape(2))
    throw std::invalid_argument("winograd_conv: the region needs one pixel of padding around it inside the buffer");
  return mx::array({1, r.h, r.w, w.shape(0)}, mx::float32, std::make_shared<WinoConv>(cpu_stream(), r),
                   {mx::contiguous(x), mx::contiguous(w)});
}

mx::array conv(const mx::array& x, const mx::array& w, int stride, const std::vector<int>& region) {
  check_input(x, 4, "conv input");
  check_input(w, 4, "conv weight");
  Region r = to_region(region);
  int k = w.shape(1), q = (k - 1) / 2;
  if (x.shape(0) != 1 || w.shape(2) != k || k % 2 == 0 || w.shape(3) != x.shape(3))
    throw std::invalid_argument("conv: batch 1, square odd kernels, matching channels");
  if (stride != 1 && stride != 2) throw std::invalid_argument("conv: stride 1 or 2");
  if (r.r0 < q || r.c0 < q || r.r0 + r.h + q > x.shape(1) || r.c0 + r.w + q > x.shape(2))
    throw std::invalid_argument("conv: the region needs (k-1)/2 of padding around it inside the buffer");
  ConvGeom g(k, stride, x.shape(1), x.shape(2), x.shape(3), w.shape(0), r);
  if (g.Ho < 1 || g.Wo < 1) throw std::invalid_argument("conv: kernel larger than the padded input");
  return mx::array({1, g.Ho, g.Wg, g.O}, mx::float32, std::make_shared<Conv>(cpu_stream(), stride, r),
                   {mx::contiguous(x), mx::contiguous(w)});
}

std::vector<mx::array> bn_act(const std::vector<mx::array>& ys, const std::vector<std::vector<int>>& regions,
                              const mx::array& gamma, const mx::array& beta, int pad, bool reflect, float slope,
                              float eps) {
  if (ys.empty() || ys.size() > 2 || ys.size() != regions.size())
    throw std::invalid_argument("bn_act: one or two inputs, one region each");
  std::vector<Region> rs;
  std::vector<mx::array> inputs;
  int C = 0;
  for (size_t p = 0; p < ys.size(); ++p) {
    check_input(ys[p], 4, "bn_act input");
    Region r = to_region(regions[p]);
    if (r.h != to_region(regions[0]).h || r.w != to_region(regions[0]).w)
      throw std::invalid_argument("bn_act: regions of different sizes");
    if (r.r0 < 0 || r.c0 < 0 || r.r0 + r.h > ys[p].shape(1) || r.c0 + r.w > ys[p].shape(2))
      throw std::invalid_argument("bn_act: region outside its buffer");
    rs.push_back(r);
    inputs.push_back(mx::contiguous(ys[p]));
    C += ys[p].shape(3);
  }
  if (gamma.shape(0) != C || beta.shape(0) != C) throw std::invalid_argument("bn_act: gamma/beta size");
  if (reflect && (rs[0].h <= pad || rs[0].w <= pad))
    throw std::invalid_argument("bn_act: reflection padding needs a side longer than the padding");
  inputs.push_back(mx::contiguous(gamma));
  inputs.push_back(mx::contiguous(beta));
  int h = rs[0].h, w = rs[0].w;
  return mx::array::make_arrays({{1, h + 2 * pad, w + 2 * pad, C}, {C}, {C}},
                                {mx::float32, mx::float32, mx::float32},
                                std::make_shared<BnAct>(cpu_stream(), rs, pad, reflect, slope, eps), inputs);
}

mx::array upsample(const mx::array& x, const std::vector<int>& region, int out_h, int out_w, bool bilinear) {
  check_input(x, 4, "upsample input");
  Region r = to_region(region);
  if (out_h > 2 * r.h || out_w > 2 * r.w || out_h < 1 || out_w < 1)
    throw std::invalid_argument("upsample: output larger than twice the region");
  return mx::array({1, out_h, out_w, x.shape(3)}, mx::float32,
                   std::make_shared<Upsample>(cpu_stream(), r, bilinear), {mx::contiguous(x)});
}

// Use a single-threaded CBLAS (loaded privately) for the kernels' products; false if unusable.
bool use_serial_blas(const std::string& path) {
  void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) return false;
  auto fn = reinterpret_cast<Sgemm>(dlsym(lib, "cblas_sgemm"));
  if (fn == nullptr) return false;
  g_sgemm = fn;
  g_serial = true;
  return true;
}

}  // namespace

NB_MODULE(_cpu_kernels, m) {
  m.doc() = "CPU kernels of the skip network for MLX (see dip_mlx/cpu_kernels.py)";
  m.attr("mlx_version") = DIP_MLX_VERSION;
  m.def("threads", [] { return pool().size(); });
  m.def("use_serial_blas", &use_serial_blas, nb::arg("path"));
  m.def("serial_blas", [] { return g_serial; });
  m.def("conv", &conv, nb::arg("x"), nb::arg("w"), nb::arg("stride"), nb::arg("region"));
  m.def("winograd_conv", &winograd_conv, nb::arg("x"), nb::arg("w"), nb::arg("region"));
  m.def("bn_act", &bn_act, nb::arg("ys"), nb::arg("regions"), nb::arg("gamma"), nb::arg("beta"), nb::arg("pad"),
        nb::arg("reflect"), nb::arg("slope"), nb::arg("eps"));
  m.def("upsample", &upsample, nb::arg("x"), nb::arg("region"), nb::arg("out_h"), nb::arg("out_w"),
        nb::arg("bilinear"));
}
