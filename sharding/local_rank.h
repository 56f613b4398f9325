// The node-local rank of this process, as launchers state it in the environment: the index of
// a rank among those on its host, which picks the rank's GPU (device = local rank modulo the
// visible devices).
#pragma once

namespace bitfleet::sharding {

// OMPI_COMM_WORLD_LOCAL_RANK (mpirun), MV2_COMM_WORLD_LOCAL_RANK, SLURM_LOCALID (srun) or
// LOCAL_RANK (torchrun-style launchers), the first that holds a non-negative integer; else 0.
int NodeLocalRank();
// Ranks on this host, from OMPI_COMM_WORLD_LOCAL_SIZE, MV2_COMM_WORLD_LOCAL_SIZE or
// LOCAL_WORLD_SIZE; 0 when no launcher says.
int NodeLocalSize();

}  // namespace bitfleet::sharding
