#include "core/spin_wait.h"

#include <cstdlib>
#include <string>

#include "absl/strings/numbers.h"
#include "core/logging.h"

namespace bitfleet {

int SpinWaitMicros() {
  static const int micros = [] {
    const char* text = std::getenv("BITFLEET_SPIN_WAIT_US");
    if (text == nullptr || *text == '\0') return 0;
    int value = 0;
    if (!absl::SimpleAtoi(text, &value) || value < 0 || value > 1000000) {
      Logger("core")->warn("BITFLEET_SPIN_WAIT_US='{}' is not 0..1000000 µs; not spinning", text);
      return 0;
    }
    if (value > 0) Logger("core")->info("hand-offs poll {} µs before sleeping (BITFLEET_SPIN_WAIT_US)", value);
    return value;
  }();
  return micros;
}

}  // namespace bitfleet
