# bitfleet_forbid_links(TARGET): fail the configure step when TARGET links, directly or through
# any chain of dependencies, the kernels, the worker, the sharding/communicator layer, MPI, NCCL
# or CUDA (DESIGN.md §2: the coordinator must build into a slim binary without them).
#
# The check walks LINK_LIBRARIES and INTERFACE_LINK_LIBRARIES of every reachable target. It is
# deferred to the end of the top-level directory, so dependencies added later (by another folder's
# target_link_libraries) are seen too.

function(_bitfleet_check_forbidden_links root)
  # Names (lower-cased) that may not appear anywhere in the dependency closure. Set here, not at
  # include time: the deferred check runs in the top-level directory's scope.
  set(forbidden "(^|[^a-z0-9_])(bitfleet_(kernels|kv_storage|sharding|worker|step_executor|inprocess_executor")
  string(APPEND forbidden "|distributed_sampling)|mpi::|cuda::|nccl|cudart|libmpi|libcuda)")
  set(queue ${root})
  set(seen "")
  while(queue)
    list(POP_FRONT queue item)
    if(item IN_LIST seen OR item MATCHES "^::@")
      continue()
    endif()
    list(APPEND seen "${item}")
    string(TOLOWER "${item}" lower)
    if(NOT item STREQUAL root AND lower MATCHES "${forbidden}")
      set(chain "${item}")
      set(node "${item}")
      while(DEFINED "_bf_parent_${node}")
        set(node "${_bf_parent_${node}}")
        string(PREPEND chain "${node} -> ")
      endwhile()
      message(FATAL_ERROR "${root} must not link '${item}' (DESIGN.md §2: the coordinator never depends on "
                          "kernels, the worker, NCCL, CUDA or MPI). Dependency chain: ${chain}")
    endif()
    # $<LINK_ONLY:x>, $<BUILD_INTERFACE:x>, ...: look inside one level of generator expression.
    if(item MATCHES "^\\$<[A-Za-z_]+:(.*)>$")
      string(REPLACE "," ";" inner "${CMAKE_MATCH_1}")
      foreach(child IN LISTS inner)
        set("_bf_parent_${child}" "${item}")
        list(APPEND queue "${child}")
      endforeach()
      continue()
    endif()
    if(NOT TARGET "${item}")
      continue()
    endif()
    get_target_property(aliased "${item}" ALIASED_TARGET)
    set(children "")
    if(aliased)
      list(APPEND children "${aliased}")
    endif()
    foreach(property LINK_LIBRARIES INTERFACE_LINK_LIBRARIES)
      get_target_property(libs "${item}" ${property})
      if(libs)
        list(APPEND children ${libs})
      endif()
    endforeach()
    foreach(child IN LISTS children)
      if(NOT DEFINED "_bf_parent_${child}")
        set("_bf_parent_${child}" "${item}")
      endif()
      list(APPEND queue "${child}")
    endforeach()
  endwhile()
endfunction()

function(_bitfleet_check_guarded_targets)
  get_property(targets GLOBAL PROPERTY BITFLEET_LINK_GUARD_TARGETS)
  foreach(target IN LISTS targets)
    _bitfleet_check_forbidden_links("${target}")
  endforeach()
endfunction()

function(bitfleet_forbid_links target)
  # Deferred-call arguments are evaluated when the call runs, so the target list travels in a
  # global property and one argument-less check is scheduled.
  get_property(scheduled GLOBAL PROPERTY BITFLEET_LINK_GUARD_SCHEDULED)
  set_property(GLOBAL APPEND PROPERTY BITFLEET_LINK_GUARD_TARGETS "${target}")
  if(NOT scheduled)
    set_property(GLOBAL PROPERTY BITFLEET_LINK_GUARD_SCHEDULED TRUE)
    cmake_language(DEFER DIRECTORY ${CMAKE_SOURCE_DIR} CALL _bitfleet_check_guarded_targets)
  endif()
endfunction()
