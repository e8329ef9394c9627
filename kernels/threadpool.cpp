// The persistent pool of edgekit_threadpool.h, and its C entry points for the Python session.
#include "edgekit_threadpool.h"

#include <algorithm>

#if defined(__linux__)
#include <pthread.h>
#endif

namespace edgekit {
namespace kernels {

ThreadPool& ThreadPool::get() {
  static ThreadPool* pool = new ThreadPool();  // leaked on purpose: no join at exit
  return *pool;
}

ThreadPool::ThreadPool() {
  unsigned hw = std::thread::hardware_concurrency();
  n_threads_.store(hw == 0 ? 1 : (int)std::min(hw, 64u));
}

void ThreadPool::set_threads(int n) { n_threads_.store(std::max(1, std::min(n, 64))); }

void ThreadPool::start_workers(int n) {
  while ((int)workers_.size() < n) {
    int id = (int)workers_.size() + 1;
    uint64_t seen = generation_.load();   // read here, before run() bumps it for the new job
    workers_.emplace_back([this, id, seen] {
#if defined(__linux__)
      pthread_setname_np(pthread_self(), "edgekit-pool");   // visible in top -H / ps -L
#endif
      worker(id, seen);
    });
  }
}

void ThreadPool::worker(int id, uint64_t seen) {
  for (;;) {
    int spins = 0;
    uint64_t g;
    while ((g = generation_.load(std::memory_order_acquire)) == seen) {
      if (++spins < kSpinIters) {
        EDGEKIT_CPU_RELAX();
        continue;
      }
      std::unique_lock<std::mutex> lock(mu_);
      sleepers_.fetch_add(1);
      cv_.wait(lock, [&] { return generation_.load() != seen; });
      sleepers_.fetch_sub(1);
      spins = 0;
    }
    seen = g;
    if (id < count_) fn_(ctx_, id, count_);
    // Every worker acknowledges every generation, so run() returns only when no worker
    // can still read this job's fn_/ctx_/count_.
    pending_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::run(Fn fn, void* ctx, int count) {
  count = std::max(1, std::min(count, threads()));
  if (count == 1) {
    fn(ctx, 0, 1);
    return;
  }
  start_workers(count - 1);
  fn_ = fn;
  ctx_ = ctx;
  count_ = count;
  pending_.store((int)workers_.size());
  generation_.fetch_add(1);             // seq_cst: ordered before the sleepers_ read below
  if (sleepers_.load() > 0) {
    std::lock_guard<std::mutex> lock(mu_);
    cv_.notify_all();
  }
  fn(ctx, 0, count);
  while (pending_.load(std::memory_order_acquire) > 0) EDGEKIT_CPU_RELAX();
}

}  // namespace kernels
}  // namespace edgekit

// For the Python session (ctypes): the thread count of edgekit's own kernels, set
// together with ExecuTorch's threadpool by `--threads`.
extern "C" __attribute__((visibility("default"))) void edgekit_kernels_set_threads(int n) {
  edgekit::kernels::ThreadPool::get().set_threads(n);
}

extern "C" __attribute__((visibility("default"))) int edgekit_kernels_threads() {
  return edgekit::kernels::ThreadPool::get().threads();
}
