#include "coordinator/stop_matcher.h"

#include <algorithm>
#include <utility>

namespace bitfleet::coordinator {

StopMatcher::StopMatcher(std::vector<std::string> stops) {
  for (std::string& stop : stops) {
    if (!stop.empty()) stops_.push_back(std::move(stop));
  }
}

std::string StopMatcher::Push(std::string_view text) {
  if (matched_) return "";
  pending_.append(text);
  // The earliest match wins; at equal positions, the stop listed first.
  size_t best = std::string::npos;
  for (const std::string& stop : stops_) {
    const size_t at = pending_.find(stop);
    if (at < best) {
      best = at;
      matched_stop_ = stop;
    }
  }
  if (best != std::string::npos) {
    matched_ = true;
    std::string released = pending_.substr(0, best);
    pending_.clear();
    return released;
  }
  // Hold back the longest tail that is a proper prefix of a stop string. (A tail that begins
  // a well-formed UTF-8 stop string starts on a character boundary, so the release does too.)
  size_t hold = 0;
  for (const std::string& stop : stops_) {
    const size_t longest = std::min(stop.size() - 1, pending_.size());
    for (size_t n = longest; n > hold; --n) {
      if (std::string_view(pending_).substr(pending_.size() - n) == std::string_view(stop).substr(0, n)) {
        hold = n;
        break;
      }
    }
  }
  std::string released = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return released;
}

std::string StopMatcher::Flush() {
  if (matched_) return "";
  return std::exchange(pending_, std::string());
}

}  // namespace bitfleet::coordinator
