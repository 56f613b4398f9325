#include "tools/commands/worker_launcher.h"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

extern char** environ;

namespace bitfleet::tools {

StatusOr<std::string> FindExecutable(const std::string& name) {
  if (name.find('/') != std::string::npos) {
    if (access(name.c_str(), X_OK) == 0) return name;
    return absl::NotFoundError(absl::StrCat(name, " is not an executable file"));
  }
  const char* path = std::getenv("PATH");
  std::string dirs = path != nullptr ? path : "/usr/bin:/bin";
  size_t begin = 0;
  while (begin <= dirs.size()) {
    size_t end = dirs.find(':', begin);
    if (end == std::string::npos) end = dirs.size();
    const std::string candidate = absl::StrCat(end > begin ? dirs.substr(begin, end - begin) : ".", "/", name);
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
    begin = end + 1;
  }
  return absl::NotFoundError(absl::StrCat(name, " not found on PATH"));
}

StatusOr<std::string> SelfExecutable() {
  std::error_code error;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", error);
  if (error) return absl::InternalError(absl::StrCat("cannot resolve /proc/self/exe: ", error.message()));
  return self.string();
}

StatusOr<ChildProcess> ChildProcess::Spawn(const std::vector<std::string>& argv,
                                           const std::vector<std::string>& extra_env) {
  if (argv.empty()) return absl::InvalidArgumentError("empty command");
  BF_ASSIGN_OR_RETURN(const std::string program, FindExecutable(argv[0]));
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<std::string> env_storage;
  for (char** e = environ; *e != nullptr; ++e) env_storage.emplace_back(*e);
  env_storage.insert(env_storage.end(), extra_env.begin(), extra_env.end());
  std::vector<char*> env;
  for (std::string& e : env_storage) env.push_back(e.data());
  env.push_back(nullptr);

  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none;
  sigemptyset(&none);
  sigset_t defaults;
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGINT);
  sigaddset(&defaults, SIGTERM);
  sigaddset(&defaults, SIGPIPE);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setpgroup(&attr, 0);  // its own process group
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
  ChildProcess child;
  const int error = posix_spawn(&child.pid_, program.c_str(), nullptr, &attr, args.data(), env.data());
  posix_spawnattr_destroy(&attr);
  if (error != 0) {
    return absl::InternalError(absl::StrCat("cannot start ", program, ": ", std::strerror(error)));
  }
  return child;
}

bool ChildProcess::Poll(std::string* how) {
  if (pid_ <= 0) return true;
  if (!exited_) {
    int status = 0;
    const pid_t done = waitpid(pid_, &status, WNOHANG);
    if (done == pid_) {
      exited_ = true;
      how_ = WIFEXITED(status)     ? absl::StrCat("exit code ", WEXITSTATUS(status))
             : WIFSIGNALED(status) ? absl::StrCat("signal ", WTERMSIG(status))
                                   : "ended";
    } else if (done < 0) {
      exited_ = true;  // not our child any more (reaped elsewhere)
      how_ = "gone";
    }
  }
  if (exited_ && how != nullptr) *how = how_;
  return exited_;
}

bool ChildProcess::WaitFor(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!Poll()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

void ChildProcess::SignalGroup(int signal) {
  if (running()) kill(-pid_, signal);
}

void ChildProcess::Terminate(std::chrono::milliseconds grace) {
  if (Poll()) return;
  SignalGroup(SIGTERM);
  if (WaitFor(grace)) return;
  SignalGroup(SIGKILL);
  WaitFor(std::chrono::seconds(5));
}

}  // namespace bitfleet::tools
