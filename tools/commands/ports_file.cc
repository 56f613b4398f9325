#include "tools/commands/ports_file.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <utility>

#include "absl/strings/str_cat.h"

namespace bitfleet::tools {
namespace {

std::string PortOrNull(int port) { return port > 0 ? absl::StrCat(port) : "null"; }

}  // namespace

void AddPortsFileFlag(CLI::App& cmd, std::string* path) {
  cmd.add_option("--ports-file", *path,
                 "Write the ports listened on to this JSON file once they are bound (removed at exit): "
                 "{\"api\", \"http\", \"metrics\", \"control\", \"pid\"}; with port 0 flags, learn the ports chosen");
}

StatusOr<PortsFile> PortsFile::Write(const std::string& path, const coordinator::CoordinatorServer& server) {
  if (path.empty()) return PortsFile(std::string());
  const std::string json =
      absl::StrCat("{\"api\": ", PortOrNull(server.api_port()), ", \"http\": ", PortOrNull(server.http_port()),
                   ", \"metrics\": ", PortOrNull(server.metrics_port()), ", \"control\": ",
                   PortOrNull(server.control_port()), ", \"pid\": ", getpid(), "}\n");
  const std::string temporary = absl::StrCat(path, ".tmp.", getpid());
  {
    std::ofstream out(temporary, std::ios::trunc);
    out << json;
    out.close();
    if (!out) {
      std::remove(temporary.c_str());
      return absl::InternalError(absl::StrCat("--ports-file: cannot write ", temporary));
    }
  }
  if (std::rename(temporary.c_str(), path.c_str()) != 0) {
    const std::string reason = std::strerror(errno);
    std::remove(temporary.c_str());
    return absl::InternalError(absl::StrCat("--ports-file: cannot rename ", temporary, " to ", path, ": ", reason));
  }
  return PortsFile(path);
}

PortsFile::PortsFile(PortsFile&& other) noexcept : path_(std::exchange(other.path_, std::string())) {}

PortsFile::~PortsFile() {
  if (!path_.empty()) std::remove(path_.c_str());
}

}  // namespace bitfleet::tools
