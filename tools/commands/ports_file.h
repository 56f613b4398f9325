// --ports-file of `serve` and `coordinator`: the ports the server listens on, for a supervisor
// or a test that starts it with port 0 ("any free port") and must learn which one it got. A
// port chosen by the caller beforehand can be taken by another process before the server binds
// it; a port the server chose cannot.
//
// The file is one JSON object, written once every listener is bound (before any worker has
// registered: health tells readiness) and removed when the server stops:
//   {"api": 41235, "http": 41236, "metrics": null, "control": 41237, "pid": 1234}
// null for a port that is off (`control` is null for `serve --in-process`). It appears whole
// (written to a temporary file, then renamed), so a reader that sees it may parse it.
#pragma once

#include <string>

#include "CLI/CLI.hpp"
#include "coordinator/coordinator_server.h"
#include "core/status.h"

namespace bitfleet::tools {

void AddPortsFileFlag(CLI::App& cmd, std::string* path);

// The file of one running server; removes it when destroyed. Does nothing for an empty path.
class PortsFile {
 public:
  // INTERNAL (naming the file and the reason) when it cannot be written.
  static StatusOr<PortsFile> Write(const std::string& path, const coordinator::CoordinatorServer& server);
  PortsFile(PortsFile&& other) noexcept;
  PortsFile& operator=(PortsFile&&) = delete;
  PortsFile(const PortsFile&) = delete;
  ~PortsFile();

 private:
  explicit PortsFile(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

}  // namespace bitfleet::tools
