// A small fork-join pool for the CPU ops. Waiting workers block on a condition
// variable instead of spinning: the serving machine is shared with OpenBLAS's
// own threads and other processes, where spinning OpenMP teams cost more than
// they save.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace vlcache {
namespace kernels {

class WorkerPool {
 public:
  explicit WorkerPool(int threads);
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }
  // Runs fn(task, worker) for task in [0, tasks); worker in [0, size()) is
  // stable within one call (for per-worker scratch). The caller takes part.
  void Run(int tasks, const std::function<void(int task, int worker)>& fn);

 private:
  void Loop(int worker);
  void Drain(int worker);

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable wake_, done_;
  const std::function<void(int, int)>* job_ = nullptr;
  int tasks_ = 0;
  std::atomic<int> next_{0};
  int busy_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
};

}  // namespace kernels
}  // namespace vlcache
