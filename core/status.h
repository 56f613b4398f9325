// Status helpers used across every module boundary (DESIGN.md §9): abseil Status/StatusOr,
// plus the two propagation macros abseil does not ship publicly.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

#define BF_STATUS_CONCAT_INNER(a, b) a##b
#define BF_STATUS_CONCAT(a, b) BF_STATUS_CONCAT_INNER(a, b)

// Returns from the enclosing function when `expr` (an absl::Status) is not OK.
#define BF_RETURN_IF_ERROR(expr)                   \
  do {                                             \
    ::absl::Status bf_status_ = (expr);            \
    if (!bf_status_.ok()) return bf_status_;       \
  } while (0)

// `BF_ASSIGN_OR_RETURN(auto x, MakeX());` assigns the value of a StatusOr or returns its error.
#define BF_ASSIGN_OR_RETURN(lhs, expr) \
  BF_ASSIGN_OR_RETURN_IMPL(BF_STATUS_CONCAT(bf_statusor_, __LINE__), lhs, expr)
#define BF_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp.ok()) return std::move(tmp).status(); \
  lhs = std::move(tmp).value()

namespace bitfleet {
using absl::Status;
using absl::StatusOr;
}  // namespace bitfleet
