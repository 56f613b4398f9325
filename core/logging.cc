#include "core/logging.h"

#include <cstdlib>
#include <mutex>

#include "spdlog/sinks/stdout_color_sinks.h"

namespace bitfleet {
namespace {

std::mutex& LoggerMutex() {
  static std::mutex mu;
  return mu;
}

spdlog::level::level_enum& DefaultLevel() {
  static spdlog::level::level_enum level = spdlog::level::info;
  return level;
}

}  // namespace

std::shared_ptr<spdlog::logger> Logger(const std::string& module) {
  std::lock_guard<std::mutex> lock(LoggerMutex());
  if (auto existing = spdlog::get(module)) return existing;
  auto logger = spdlog::stderr_color_mt(module);
  logger->set_level(DefaultLevel());
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ [%n] %v");
  return logger;
}

bool SetLogLevel(const std::string& level) {
  auto parsed = spdlog::level::from_str(level);
  if (parsed == spdlog::level::off && level != "off") return false;
  std::lock_guard<std::mutex> lock(LoggerMutex());
  DefaultLevel() = parsed;
  spdlog::set_level(parsed);
  return true;
}

std::string LogLevelName() {
  std::lock_guard<std::mutex> lock(LoggerMutex());
  if (DefaultLevel() == spdlog::level::warn) return "warn";  // spdlog's own name is "warning"
  const spdlog::string_view_t name = spdlog::level::to_string_view(DefaultLevel());
  return std::string(name.data(), name.size());
}

void FlushLogsAndExit(int exit_code) {
  spdlog::apply_all([](const std::shared_ptr<spdlog::logger>& logger) { logger->flush(); });
  std::_Exit(exit_code);
}

}  // namespace bitfleet
