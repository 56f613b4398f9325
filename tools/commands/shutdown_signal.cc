#include "tools/commands/shutdown_signal.h"

#include <signal.h>
#include <time.h>

#include <atomic>
#include <thread>

#include "core/logging.h"

namespace bitfleet::tools {
namespace {

sigset_t ShutdownSet() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

}  // namespace

void BlockShutdownSignals() {
  const sigset_t set = ShutdownSet();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

int WaitForShutdownSignal(std::chrono::milliseconds timeout) {
  const sigset_t set = ShutdownSet();
  timespec ts;
  ts.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  ts.tv_nsec = static_cast<long>((timeout.count() % 1000) * 1000000);
  const int signal = sigtimedwait(&set, nullptr, &ts);
  return signal > 0 ? signal : 0;
}

void DrainUntilDoneOrSignaled(coordinator::CoordinatorServer& server, std::chrono::duration<double> timeout) {
  std::atomic<bool> finished{false};
  std::thread drain([&] {
    server.Drain(coordinator::Clock::now() + std::chrono::duration_cast<coordinator::Clock::duration>(timeout))
        .IgnoreError();
    finished.store(true);
  });
  while (!finished.load()) {
    if (const int signal = WaitForShutdownSignal(std::chrono::milliseconds(100)); signal != 0) {
      Logger("coordinator")->warn("signal {} during the drain: ending it now; requests still running end UNAVAILABLE",
                            signal);
      server.EndDrainNow();
      break;
    }
  }
  drain.join();
}

}  // namespace bitfleet::tools
