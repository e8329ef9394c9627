// A small persistent thread pool for edgekit's ExecuTorch kernels (decode-sized work).
//
// A decode step is ~100 back-to-back kernel calls of 10-500 us each (a GEMV of a
// 768 x 1536 layer reads 4.7 MB). Workers spin on a generation counter for kSpinIters
// pauses after each job, so the calls of one step hand off without a futex wake, then block
// on a condition variable so an idle process burns no CPU. The kernels do not use
// ExecuTorch's threadpool: this keeps the kernel library independent of which threadpool
// symbols a given executorch build exports (not checked across builds).
//
// One pool per process (the kernel library is loaded once). The thread count is set by
// edgekit_kernels_set_threads (called by the edgekit runtime session with --threads),
// default: the machine's hardware threads. Workers start on first use.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define EDGEKIT_CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define EDGEKIT_CPU_RELAX() asm volatile("yield")
#else
#define EDGEKIT_CPU_RELAX() ((void)0)
#endif

namespace edgekit {
namespace kernels {

class ThreadPool {
 public:
  // fn(ctx, index, count) is called once for every index in [0, count), count <= threads().
  using Fn = void (*)(void* ctx, int index, int count);

  static ThreadPool& get();

  int threads() const { return n_threads_.load(std::memory_order_relaxed); }
  void set_threads(int n);
  // Runs fn(ctx, i, count) for i in [0, count) and returns when all are done. The caller
  // runs index 0. A call from a pool worker, or while another thread's call is running
  // (two programs executing at once), runs every index inline on the calling thread.
  // fn should not throw; if it does, run() waits for the other indices, then rethrows.
  void run(Fn fn, void* ctx, int count);

 private:
  ThreadPool();
  void start_workers(int n);
  void worker(int id, uint64_t seen);
  static void after_fork_in_child();

  static constexpr int kSpinIters = 1 << 16;
  std::atomic<int> n_threads_{1};
  std::vector<std::thread> workers_;   // never joined: the pool lives until process exit
  std::mutex run_mu_;                  // one run() at a time; others go inline
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<bool> failed_{false};    // a worker's fn threw
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<int> sleepers_{0};
  Fn fn_ = nullptr;
  void* ctx_ = nullptr;
  int count_ = 0;
};

// f(begin, end) over [0, n) split into contiguous ranges, one per pool thread, with at
// least `grain` items per thread (fewer threads for small n; n < 2 * grain runs inline).
template <class F>
void parallel_for(int64_t n, int64_t grain, const F& f) {
  ThreadPool& pool = ThreadPool::get();
  const int64_t by_grain = grain > 0 ? n / grain : n;
  const int count = (int)std::min<int64_t>(pool.threads(), std::max<int64_t>(1, by_grain));
  if (count <= 1) {
    f((int64_t)0, n);
    return;
  }
  struct Ctx {
    const F* f;
    int64_t n;
  } ctx{&f, n};
  pool.run(
      [](void* p, int i, int cnt) {
        const Ctx& c = *static_cast<const Ctx*>(p);
        (*c.f)(c.n * i / cnt, c.n * (i + 1) / cnt);
      },
      &ctx, count);
}

}  // namespace kernels
}  // namespace edgekit
