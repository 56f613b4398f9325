// Polling before sleeping, for the hand-offs on a request's path.
//
// A thread that sleeps on a condition variable pays the kernel's wake-up when it is notified:
// ~2 µs on the development VM (measured), possibly tens of µs where idle cores drop into deep
// sleep states (the hypothesis for the GPU machine's longer serving path, docs/cuda.md), and a
// served token crosses several such hand-offs (API thread, scheduler, dispatch thread). With
// BITFLEET_SPIN_WAIT_US=N (default 0: off) those waits first poll their condition for up to N
// µs, costing a core for that long, so a notification that comes within N µs is seen at once. It suits machines with cores to spare (a GPU server), not small CPU
// boxes whose cores run the model. Every open Generate call's thread polls as well, so at high
// concurrency it takes that many cores while tokens are due: an experiment until measured
// (scripts/gpu-check.sh serves with it), not a default.
#pragma once

#include <chrono>
#include <mutex>
#include <thread>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace bitfleet {

// Tells the core this is a spin-wait loop (saves power, and yields the pipeline to a
// hyperthread sibling).
inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

// BITFLEET_SPIN_WAIT_US, read once: µs to poll before sleeping (0: never poll). A value that is
// not a number from 0 to 1,000,000 is ignored with a warning.
int SpinWaitMicros();

// With `lock` held on entry and exit: true as soon as pred() holds (checked under the lock),
// false after SpinWaitMicros() µs without it (at once when spinning is off). Between checks the
// lock is released, so the notifier can take it. The caller then waits on its condition
// variable as before.
template <class Pred>
bool SpinUntil(std::unique_lock<std::mutex>& lock, const Pred& pred) {
  if (pred()) return true;
  const int micros = SpinWaitMicros();
  if (micros <= 0) return false;
  const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(micros);
  do {
    lock.unlock();
    for (int i = 0; i < 8; ++i) CpuRelax();
    lock.lock();
    if (pred()) return true;
  } while (std::chrono::steady_clock::now() < until);
  return false;
}

}  // namespace bitfleet
