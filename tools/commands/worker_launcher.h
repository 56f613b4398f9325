// Child processes for `bitfleet serve`: one mpirun (or, for a group of one without mpirun, one
// `bitfleet worker`) per replica. Each child gets its own process group, so the terminal's
// Ctrl-C reaches only `serve` (which drains and then stops the workers through the control
// plane), and a clean signal mask, so it can be stopped with SIGTERM when it does not go.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "core/status.h"

namespace bitfleet::tools {

class ChildProcess {
 public:
  ChildProcess() = default;
  // Starts `argv` (argv[0] a path or a name found on PATH) with this process's environment
  // plus `extra_env` ("NAME=value").
  static StatusOr<ChildProcess> Spawn(const std::vector<std::string>& argv, const std::vector<std::string>& extra_env);

  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0 && !exited_; }
  // Reaps the child if it has exited (never blocks). True when it has exited; `how` then says
  // how ("exit code 1", "signal 9").
  bool Poll(std::string* how = nullptr);
  // Waits up to `timeout` for the child to exit; true when it has.
  bool WaitFor(std::chrono::milliseconds timeout);
  // Sends `signal` to the child's whole process group (mpirun and its ranks).
  void SignalGroup(int signal);
  // SIGTERM, then SIGKILL after `grace`; waits for the exit.
  void Terminate(std::chrono::milliseconds grace);

 private:
  pid_t pid_ = -1;
  bool exited_ = false;
  std::string how_;
};

// Resolves `name` on PATH (a name with a slash is returned as is). NOT_FOUND when absent.
StatusOr<std::string> FindExecutable(const std::string& name);

// The path of the running binary (/proc/self/exe).
StatusOr<std::string> SelfExecutable();

}  // namespace bitfleet::tools
