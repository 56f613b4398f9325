# Every dependency comes from Debian's packages (see scripts/install-deps.sh); nothing is
# downloaded at build time.
find_package(Threads REQUIRED)
find_package(absl CONFIG REQUIRED)
find_package(spdlog CONFIG REQUIRED)
find_package(CLI11 CONFIG REQUIRED)
find_package(nlohmann_json CONFIG REQUIRED)
find_package(OpenSSL REQUIRED COMPONENTS Crypto SSL)  # SHA-256 of KV prefix blocks, the HTTP API's TLS (libssl-dev)
# gRPC (its config pulls in Protobuf: protobuf::protoc, protobuf::libprotobuf) for proto/.
find_package(gRPC CONFIG REQUIRED)
if(BITFLEET_TESTS)
  find_package(GTest CONFIG REQUIRED)
endif()
if(BITFLEET_MPI)
  find_package(MPI REQUIRED COMPONENTS CXX)
endif()
