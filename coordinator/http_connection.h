// Whether the client of a running HTTP request is still connected.
//
// cpp-httplib 0.11 gives a handler no way to see its connection: a streamed response learns of
// a client gone from its failing writes (DataSink), but a handler that computes a whole answer
// before it writes anything (a non-streamed completion) would run to the end for nobody. The
// connection is found instead among this process's sockets by its two addresses, which
// cpp-httplib gives every request (numeric host strings, as getnameinfo writes them); a TCP
// connection is the only socket with that pair. While the handler runs, cpp-httplib holds the
// socket open, so the descriptor stays this connection's.
//
// A peer that shut down its sending side counts as gone, as in nginx: HTTP/1.1 clients do not
// half-close while they wait for an answer.
#pragma once

#include <string>

namespace bitfleet::coordinator {

class HttpConnection {
 public:
  // The connection from `remote_addr`:`remote_port` to `local_addr`:`local_port`; unknown (never
  // gone) when no socket of this process matches, e.g. addresses in a form this does not write.
  static HttpConnection Find(const std::string& local_addr, int local_port, const std::string& remote_addr,
                             int remote_port);

  bool known() const { return fd_ >= 0; }
  // True once the peer closed or reset the connection (or shut down its sending side). Cheap: one
  // poll with no wait. Call only while the request's handler runs.
  bool PeerGone() const;

 private:
  explicit HttpConnection(int fd) : fd_(fd) {}
  int fd_;
};

}  // namespace bitfleet::coordinator
