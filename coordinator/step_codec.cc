#include "coordinator/step_codec.h"

#include <algorithm>
#include <string>

namespace bitfleet::coordinator {
namespace {

void ToProto(const StepSampling& s, v1::StepSampling* out) {
  out->set_temperature(s.temperature);
  out->set_top_k(s.top_k);
  out->set_top_p(s.top_p);
  out->set_min_p(s.min_p);
  out->set_repeat_penalty(s.repeat_penalty);
  out->set_presence_penalty(s.presence_penalty);
  out->set_frequency_penalty(s.frequency_penalty);
  out->set_penalty_last_n(s.penalty_last_n);
  out->set_seed(s.seed);
  out->set_logprobs(s.logprobs);
  out->set_top_logprobs(s.top_logprobs);
  for (const TokenBias& b : s.logit_bias) {
    v1::TokenBias* entry = out->add_logit_bias();
    entry->set_token(b.token);
    entry->set_bias(b.bias);
  }
}

StepSampling FromProto(const v1::StepSampling& s) {
  StepSampling out;
  out.temperature = s.temperature();
  out.top_k = s.top_k();
  out.top_p = s.top_p();
  out.min_p = s.min_p();
  out.repeat_penalty = s.repeat_penalty();
  out.presence_penalty = s.presence_penalty();
  out.frequency_penalty = s.frequency_penalty();
  out.penalty_last_n = s.penalty_last_n();
  out.seed = s.seed();
  out.logprobs = s.logprobs();
  out.top_logprobs = s.top_logprobs();
  for (const v1::TokenBias& b : s.logit_bias()) out.logit_bias.push_back({b.token(), b.bias()});
  return out;
}

}  // namespace

void ToProto(const StepPlan& plan, v1::StepPlan* out) {
  out->Clear();
  out->set_step_id(plan.step_id);
  out->mutable_sequences()->Reserve(static_cast<int>(plan.sequences.size()));
  for (const SequencePlan& seq : plan.sequences) {
    v1::SequencePlan* p = out->add_sequences();
    p->set_sequence_id(seq.sequence_id);
    p->mutable_tokens()->Add(seq.tokens.begin(), seq.tokens.end());
    p->set_start_pos(seq.start_pos);
    p->mutable_block_table()->Add(seq.block_table.begin(), seq.block_table.end());
    p->set_sample(seq.sample);
    ToProto(seq.sampling, p->mutable_sampling());
    p->mutable_allowed_tokens()->Add(seq.allowed_tokens.begin(), seq.allowed_tokens.end());
    p->mutable_history()->Add(seq.history.begin(), seq.history.end());
    p->set_sample_index(seq.sample_index);
    p->mutable_score_tokens()->Add(seq.score_tokens.begin(), seq.score_tokens.end());
    p->set_draft_tokens(seq.draft_tokens);
  }
  out->mutable_released_sequences()->Add(plan.released_sequences.begin(), plan.released_sequences.end());
}

StepPlan FromProto(const v1::StepPlan& plan) {
  StepPlan out;
  out.step_id = plan.step_id();
  out.sequences.reserve(plan.sequences_size());
  for (const v1::SequencePlan& p : plan.sequences()) {
    SequencePlan seq;
    seq.sequence_id = p.sequence_id();
    seq.tokens.assign(p.tokens().begin(), p.tokens().end());
    seq.start_pos = p.start_pos();
    seq.block_table.assign(p.block_table().begin(), p.block_table().end());
    seq.sample = p.sample();
    seq.sampling = FromProto(p.sampling());
    seq.allowed_tokens.assign(p.allowed_tokens().begin(), p.allowed_tokens().end());
    seq.history.assign(p.history().begin(), p.history().end());
    seq.sample_index = p.sample_index();
    seq.score_tokens.assign(p.score_tokens().begin(), p.score_tokens().end());
    seq.draft_tokens = p.draft_tokens();
    out.sequences.push_back(std::move(seq));
  }
  out.released_sequences.assign(plan.released_sequences().begin(), plan.released_sequences().end());
  return out;
}

void ToProto(const StepResult& result, v1::StepResult* out) {
  out->Clear();
  out->set_step_id(result.step_id);
  out->mutable_sequences()->Reserve(static_cast<int>(result.sequences.size()));
  for (const SequenceResult& seq : result.sequences) {
    v1::SequenceResult* r = out->add_sequences();
    r->set_sequence_id(seq.sequence_id);
    r->set_token(seq.token);
    if (seq.has_logprobs) {
      r->set_has_logprobs(true);
      r->set_logprob(seq.logprob);
      for (const TokenLogprob& top : seq.top_logprobs) {
        r->add_top_token_ids(top.token);
        r->add_top_logprobs(top.logprob);
      }
    }
    for (const ScoredToken& scored : seq.scored) {
      v1::ScoredToken* s = r->add_scored();
      s->set_logprob(scored.logprob);
      for (const TokenLogprob& top : scored.top_logprobs) {
        s->add_top_token_ids(top.token);
        s->add_top_logprobs(top.logprob);
      }
    }
    r->mutable_draft_samples()->Add(seq.draft_samples.begin(), seq.draft_samples.end());
  }
}

void ErrorToProto(uint64_t step_id, const Status& error, v1::StepResult* out) {
  out->Clear();
  out->set_step_id(step_id);
  out->set_error_code(static_cast<int>(error.code()));
  out->set_error_message(std::string(error.message()));
}

Status StatusOfResult(const v1::StepResult& result) {
  if (result.error_code() == 0) return absl::OkStatus();
  return Status(StatusCodeFromInt(result.error_code()), result.error_message());
}

StepResult FromProto(const v1::StepResult& result) {
  StepResult out;
  out.step_id = result.step_id();
  out.sequences.reserve(result.sequences_size());
  for (const v1::SequenceResult& r : result.sequences()) {
    SequenceResult seq{r.sequence_id(), r.token()};
    if (r.has_logprobs()) {
      seq.has_logprobs = true;
      seq.logprob = r.logprob();
      // Parallel lists of unequal length (a malformed result) keep their common part.
      const int n = std::min(r.top_token_ids_size(), r.top_logprobs_size());
      for (int k = 0; k < n; ++k) seq.top_logprobs.push_back({r.top_token_ids(k), r.top_logprobs(k)});
    }
    for (const v1::ScoredToken& s : r.scored()) {
      ScoredToken scored{s.logprob(), {}};
      const int n = std::min(s.top_token_ids_size(), s.top_logprobs_size());
      for (int k = 0; k < n; ++k) scored.top_logprobs.push_back({s.top_token_ids(k), s.top_logprobs(k)});
      seq.scored.push_back(std::move(scored));
    }
    seq.draft_samples.assign(r.draft_samples().begin(), r.draft_samples().end());
    out.sequences.push_back(std::move(seq));
  }
  return out;
}

v1::ModelIdentity ModelIdentityOf(const model::ModelConfig& config, uint64_t file_bytes) {
  v1::ModelIdentity id;
  id.set_name(config.name);
  id.set_architecture(config.arch_name);
  id.set_n_vocab(config.n_vocab);
  id.set_n_embd(config.n_embd);
  id.set_n_layer(config.n_layer);
  id.set_n_head(config.n_head);
  id.set_n_head_kv(config.n_head_kv);
  id.set_n_ff(config.n_ff);
  id.set_file_bytes(file_bytes);
  return id;
}

grpc::Status ToGrpcStatus(const Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return Status(StatusCodeFromInt(status.error_code()), status.error_message());
}

absl::StatusCode StatusCodeFromInt(int code) {
  // OK (0) through UNAUTHENTICATED (16) are the codes both libraries define.
  if (code < 0 || code > static_cast<int>(absl::StatusCode::kUnauthenticated)) return absl::StatusCode::kUnknown;
  return static_cast<absl::StatusCode>(code);
}

}  // namespace bitfleet::coordinator
