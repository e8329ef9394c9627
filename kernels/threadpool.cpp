// The persistent pool of edgekit_threadpool.h, and its C entry points for the Python session.
#include "edgekit_threadpool.h"

#include <algorithm>
#include <new>
#include <stdexcept>

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#endif

namespace edgekit {
namespace kernels {

namespace {
thread_local bool tls_in_pool = false;  // set on pool workers: a nested run() goes inline

int default_threads() {
#if defined(__linux__)
  cpu_set_t set;  // the CPUs this process may run on (taskset, cgroup cpusets), not the machine's
  if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0) {
    return std::min(CPU_COUNT(&set), 64);
  }
#endif
  unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : (int)std::min(hw, 64u);
}
}  // namespace

ThreadPool& ThreadPool::get() {
  static ThreadPool* pool = new ThreadPool();  // leaked on purpose: no join at exit
  return *pool;
}

ThreadPool::ThreadPool() {
  n_threads_.store(default_threads());
#if defined(__linux__)
  pthread_atfork(nullptr, nullptr, &ThreadPool::after_fork_in_child);
#endif
}

// A forked child has none of the parent's workers: forget them (never join or destroy the
// std::thread objects, which would terminate) and start fresh ones on the next run().
void ThreadPool::after_fork_in_child() {
  ThreadPool& p = get();
  new std::vector<std::thread>(std::move(p.workers_));  // leaked on purpose
  p.workers_.clear();
  new (&p.run_mu_) std::mutex();       // a lock held by a parent thread is gone with it
  new (&p.mu_) std::mutex();
  new (&p.cv_) std::condition_variable();
  p.pending_.store(0);
  p.sleepers_.store(0);
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
      tls_in_pool = true;
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
    if (id < count_) {
      try {
        fn_(ctx_, id, count_);
      } catch (...) {
        failed_.store(true);
      }
    }
    // Every worker acknowledges every generation, so run() returns only when no worker
    // can still read this job's fn_/ctx_/count_. (Workers beyond a lowered thread count
    // still wake to acknowledge; lowering --threads after a higher count costs that.)
    pending_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::run(Fn fn, void* ctx, int count) {
  count = std::max(1, std::min(count, threads()));
  std::unique_lock<std::mutex> busy(run_mu_, std::defer_lock);
  if (count == 1 || tls_in_pool || !busy.try_lock()) {
    for (int i = 0; i < count; ++i) fn(ctx, i, count);
    return;
  }
  start_workers(count - 1);
  fn_ = fn;
  ctx_ = ctx;
  count_ = count;
  failed_.store(false);
  pending_.store((int)workers_.size());
  generation_.fetch_add(1);             // seq_cst: ordered before the sleepers_ read below
  if (sleepers_.load() > 0) {
    std::lock_guard<std::mutex> lock(mu_);
    cv_.notify_all();
  }
  auto wait = [this] {
    for (int spins = 0; pending_.load(std::memory_order_acquire) > 0; ++spins) {
      if (spins < kSpinIters) {
        EDGEKIT_CPU_RELAX();
      } else {
        std::this_thread::yield();     // more threads than free cores: let the worker run
      }
    }
  };
  try {
    fn(ctx, 0, count);
  } catch (...) {
    wait();                            // workers may still read ctx: it lives in our caller
    throw;
  }
  wait();
  if (failed_.load()) throw std::runtime_error("edgekit thread pool: a task threw on a worker");
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
