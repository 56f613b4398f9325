#include "coordinator/http_connection.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <cstdint>
#include <cstdlib>

namespace bitfleet::coordinator {
namespace {

using AddressFn = int (*)(int, sockaddr*, socklen_t*);

// `fd`'s local or peer address (getsockname / getpeername) is host:port, in getnameinfo's
// numeric form; false for anything that is not a connected IP socket.
bool AddressIs(int fd, AddressFn get, const std::string& host, int port) {
  sockaddr_storage address{};
  socklen_t length = sizeof(address);
  if (get(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) return false;
  // The port first, without a conversion: most sockets differ there.
  uint16_t network_port = 0;
  if (address.ss_family == AF_INET) {
    network_port = reinterpret_cast<const sockaddr_in*>(&address)->sin_port;
  } else if (address.ss_family == AF_INET6) {
    network_port = reinterpret_cast<const sockaddr_in6*>(&address)->sin6_port;
  } else {
    return false;
  }
  if (ntohs(network_port) != port) return false;
  char name[NI_MAXHOST];
  if (getnameinfo(reinterpret_cast<sockaddr*>(&address), length, name, sizeof(name), nullptr, 0, NI_NUMERICHOST) != 0) {
    return false;
  }
  return host == name;
}

}  // namespace

HttpConnection HttpConnection::Find(const std::string& local_addr, int local_port, const std::string& remote_addr,
                                    int remote_port) {
  if (local_port <= 0 || remote_port <= 0) return HttpConnection(-1);
  DIR* fds = opendir("/proc/self/fd");
  if (fds == nullptr) return HttpConnection(-1);
  const int own = dirfd(fds);
  int found = -1;
  while (dirent* entry = readdir(fds)) {
    if (entry->d_name[0] < '0' || entry->d_name[0] > '9') continue;
    const int fd = std::atoi(entry->d_name);
    if (fd == own) continue;
    // The peer first: a listening socket has none, and most sockets differ there.
    if (AddressIs(fd, getpeername, remote_addr, remote_port) && AddressIs(fd, getsockname, local_addr, local_port)) {
      found = fd;
      break;
    }
  }
  closedir(fds);
  return HttpConnection(found);
}

bool HttpConnection::PeerGone() const {
  if (fd_ < 0) return false;
  pollfd watched{fd_, POLLRDHUP, 0};
  if (poll(&watched, 1, 0) != 1) return false;
  return (watched.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

}  // namespace bitfleet::coordinator
