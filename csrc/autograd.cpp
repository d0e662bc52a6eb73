// Autograd for every differentiable op (mor_linear, route, grouped_lora and the two many-layer losses), in C++.
//
// Why not torch.library.register_autograd in Python: the per-layer ops run once per adapted
// projection (7 per transformer block), and the Python wrapper (argument defaults, setup_context,
// the backward closure) cost ~330 us per layer per training step on the dev CPU, more than the whole
// op at decode sizes and, on an H100, most of a training step's host time. The losses run once per
// step, but over lists of every layer's tensors: their Python wrappers (pytree over the lists,
// saving and unpacking 2 x 28 tensors) cost ~320 us a step of the tiny benchmark preset, twice
// the orthogonal loss's own arithmetic there. Here each op's Autograd kernel is a
// torch::autograd::Function, as torchvision registers its ops; each backward is itself an op
// (mor_linear_backward, ...), so torch.compile traces both through their fake kernels.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <initializer_list>
#include <optional>
#include <tuple>
#include <vector>

namespace mor_ext {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using Tensor = at::Tensor;
using IntList = at::IntArrayRef;
using Tensors2 = std::tuple<Tensor, Tensor>;
using Tensors3 = std::tuple<Tensor, Tensor, Tensor>;
using Tensors4 = std::tuple<Tensor, Tensor, Tensor, Tensor>;
using Tensors5 = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor>;
using Tensors6 = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;

// The typed handle of one of our ops; each call site keeps its own in a function-local static.
template <typename Signature>
c10::TypedOperatorHandle<Signature> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

// ------------------------------------------------------------------------------------------ mor_linear
using MoRLinearSig = Tensors6(const Tensor&, const Tensor&, const std::optional<Tensor>&, const Tensor&, const Tensor&,
                              const Tensor&, const Tensor&, const Tensor&, IntList, IntList, IntList, bool, double);
using MoRLinearBackwardSig = Tensors5(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                      const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                      const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                      IntList, IntList, IntList, bool, double);

class MoRLinearFunction : public torch::autograd::Function<MoRLinearFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& x, const Tensor& weight,
                               const std::optional<Tensor>& bias, const Tensor& lora_A, const Tensor& lora_B,
                               const Tensor& router_weight, const Tensor& shared_gate_weight, const Tensor& role_ids,
                               std::vector<int64_t> num_experts, std::vector<int64_t> top_k,
                               std::vector<int64_t> has_shared, bool sigmoid_gate, double scaling) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    static const auto op = find_op<MoRLinearSig>("mor_ext::mor_linear");
    auto [y, lora_index, lora_weight, router_probs, shrink, shared_gate_logit] =
        op.call(x, weight, bias, lora_A, lora_B, router_weight, shared_gate_weight, role_ids, num_experts, top_k,
                has_shared, sigmoid_gate, scaling);
    const bool has_bias = bias.has_value() && bias->defined();
    ctx->saved_data["num_experts"] = num_experts;
    ctx->saved_data["top_k"] = top_k;
    ctx->saved_data["has_shared"] = has_shared;
    ctx->saved_data["sigmoid_gate"] = sigmoid_gate;
    ctx->saved_data["scaling"] = scaling;
    ctx->saved_data["has_bias"] = has_bias;
    ctx->save_for_backward({x, weight, lora_A, lora_B, router_weight, shared_gate_weight, role_ids, lora_index,
                            lora_weight, router_probs, shrink, shared_gate_logit});
    // lora_weight and router_probs stay differentiable (the load-balance loss and users read them).
    ctx->mark_non_differentiable({lora_index, shrink, shared_gate_logit});
    return {y, lora_index, lora_weight, router_probs, shrink, shared_gate_logit};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const Tensor &x = saved[0], &weight = saved[1], &lora_A = saved[2], &lora_B = saved[3],
                 &router_weight = saved[4], &shared_gate_weight = saved[5], &role_ids = saved[6],
                 &lora_index = saved[7], &lora_weight = saved[8], &router_probs = saved[9], &shrink = saved[10],
                 &shared_gate_logit = saved[11];
    const Tensor grad_y = grads[0].defined() ? grads[0] : at::zeros({x.size(0), weight.size(0)}, x.options());
    const Tensor grad_weight = grads[2].defined() ? grads[2] : at::zeros_like(lora_weight);
    const Tensor grad_probs = grads[3].defined() ? grads[3] : at::zeros_like(router_probs);
    const auto num_experts = ctx->saved_data["num_experts"].toIntVector();
    const auto top_k = ctx->saved_data["top_k"].toIntVector();
    const auto has_shared = ctx->saved_data["has_shared"].toIntVector();
    static const auto backward_op = find_op<MoRLinearBackwardSig>("mor_ext::mor_linear_backward");
    auto [grad_x, grad_A, grad_B, grad_router, grad_gate] = backward_op.call(
        grad_y, grad_weight, grad_probs, x, weight, lora_A, lora_B, router_weight, shared_gate_weight, role_ids,
        lora_index, lora_weight, router_probs, shrink, shared_gate_logit, num_experts, top_k, has_shared,
        ctx->saved_data["sigmoid_gate"].toBool(), ctx->saved_data["scaling"].toDouble());
    // The frozen base weight and bias get gradients only if someone asked for them. Edges count the
    // tensor inputs present: x 0, weight 1, bias 2 when given.
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    const Tensor grad_base = ctx->needs_input_grad(1) ? grad_y.t().mm(x) : Tensor();
    const Tensor grad_bias = has_bias && ctx->needs_input_grad(2) ? grad_y.sum(0) : Tensor();
    // One entry per argument of forward, undefined for the ones without a gradient.
    return {grad_x, grad_base, grad_bias, grad_A, grad_B, grad_router, grad_gate,
            Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

// Whether a call needs a graph node: grad mode on and some input wants a gradient.
bool needs_graph(std::initializer_list<const Tensor*> inputs) {
  if (!at::GradMode::is_enabled()) return false;
  for (const Tensor* t : inputs)
    if (t->defined() && t->requires_grad()) return true;
  return false;
}

// The same for ops that take lists of tensors (the losses: one tensor per layer).
bool needs_graph(at::TensorList first, at::TensorList second = {}) {
  if (!at::GradMode::is_enabled()) return false;
  for (at::TensorList list : {first, second})
    for (const Tensor& t : list)
      if (t.defined() && t.requires_grad()) return true;
  return false;
}

Tensors6 mor_linear_autograd(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias,
                             const Tensor& lora_A, const Tensor& lora_B, const Tensor& router_weight,
                             const Tensor& shared_gate_weight, const Tensor& role_ids, at::IntArrayRef num_experts,
                             at::IntArrayRef top_k, at::IntArrayRef has_shared, bool sigmoid_gate, double scaling) {
  // Inference (generation runs 210 of these per token): no node, no saved tensors, no copies of the
  // spec lists; building them cost ~3 us a call on the dev CPU, a quarter of the op's fixed cost.
  if (!needs_graph({&x, &weight, bias.has_value() ? &*bias : &x, &lora_A, &lora_B, &router_weight,
                    &shared_gate_weight})) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    static const auto op = find_op<MoRLinearSig>("mor_ext::mor_linear");
    return op.call(x, weight, bias, lora_A, lora_B, router_weight, shared_gate_weight, role_ids, num_experts, top_k,
                   has_shared, sigmoid_gate, scaling);
  }
  const variable_list out =
      MoRLinearFunction::apply(x, weight, bias, lora_A, lora_B, router_weight, shared_gate_weight, role_ids,
                               num_experts.vec(), top_k.vec(), has_shared.vec(), sigmoid_gate, scaling);
  return {out[0], out[1], out[2], out[3], out[4], out[5]};
}

// ------------------------------------------------------------------------------------------ route
using RouteSig = Tensors3(const Tensor&, const Tensor&, const Tensor&, const Tensor&, IntList, IntList, IntList, bool);
using RouteBackwardSig = Tensors3(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                  const Tensor&, const Tensor&, const Tensor&, IntList, IntList, IntList, bool);

class RouteFunction : public torch::autograd::Function<RouteFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& x, const Tensor& router_weight,
                               const Tensor& shared_gate_weight, const Tensor& role_ids,
                               std::vector<int64_t> num_experts, std::vector<int64_t> top_k,
                               std::vector<int64_t> has_shared, bool sigmoid_gate) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    static const auto op = find_op<RouteSig>("mor_ext::route");
    auto [lora_index, lora_weight, router_probs] = op.call(
        x, router_weight, shared_gate_weight, role_ids, num_experts, top_k, has_shared, sigmoid_gate);
    ctx->saved_data["num_experts"] = num_experts;
    ctx->saved_data["top_k"] = top_k;
    ctx->saved_data["has_shared"] = has_shared;
    ctx->saved_data["sigmoid_gate"] = sigmoid_gate;
    ctx->save_for_backward({x, router_weight, shared_gate_weight, role_ids, lora_index, router_probs});
    ctx->mark_non_differentiable({lora_index});
    return {lora_index, lora_weight, router_probs};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const Tensor &x = saved[0], &lora_index = saved[4], &router_probs = saved[5];
    const Tensor grad_weight = grads[1].defined() ? grads[1] : at::zeros(lora_index.sizes(), x.options());
    const Tensor grad_probs = grads[2].defined() ? grads[2] : at::zeros_like(router_probs);
    static const auto backward_op = find_op<RouteBackwardSig>("mor_ext::route_backward");
    auto [grad_x, grad_router, grad_gate] = backward_op.call(
        grad_weight, grad_probs, x, saved[1], saved[2], saved[3], lora_index, router_probs,
        ctx->saved_data["num_experts"].toIntVector(), ctx->saved_data["top_k"].toIntVector(),
        ctx->saved_data["has_shared"].toIntVector(), ctx->saved_data["sigmoid_gate"].toBool());
    return {grad_x, grad_router, grad_gate, Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

Tensors3 route_autograd(const Tensor& x, const Tensor& router_weight, const Tensor& shared_gate_weight,
                        const Tensor& role_ids, IntList num_experts, IntList top_k, IntList has_shared,
                        bool sigmoid_gate) {
  const variable_list out = RouteFunction::apply(x, router_weight, shared_gate_weight, role_ids, num_experts.vec(),
                                                 top_k.vec(), has_shared.vec(), sigmoid_gate);
  return {out[0], out[1], out[2]};
}

// ------------------------------------------------------------------------------------------ grouped_lora
using GroupedSig = Tensors2(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, double,
                            const std::optional<Tensor>&, const std::optional<Tensor>&);
using GroupedBackwardSig = Tensors4(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                    const Tensor&, const Tensor&, double, const std::optional<Tensor>&);

class GroupedLoraFunction : public torch::autograd::Function<GroupedLoraFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& x, const Tensor& lora_A, const Tensor& lora_B,
                               const Tensor& lora_index, const Tensor& lora_weight, double scaling,
                               const std::optional<Tensor>& weight, const std::optional<Tensor>& bias) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    static const auto op = find_op<GroupedSig>("mor_ext::grouped_lora");
    auto [out, shrink] = op.call(x, lora_A, lora_B, lora_index, lora_weight, scaling, weight, bias);
    const bool has_weight = weight.has_value() && weight->defined();
    ctx->saved_data["scaling"] = scaling;
    ctx->saved_data["has_weight"] = has_weight;
    ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
    ctx->save_for_backward({x, lora_A, lora_B, lora_index, lora_weight, shrink, has_weight ? *weight : Tensor()});
    ctx->mark_non_differentiable({shrink});
    return {out, shrink};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const Tensor& x = saved[0];
    const bool has_weight = ctx->saved_data["has_weight"].toBool(), has_bias = ctx->saved_data["has_bias"].toBool();
    const std::optional<Tensor> weight = has_weight ? std::optional<Tensor>(saved[6]) : std::nullopt;
    const Tensor grad_out = grads[0].defined() ? grads[0] : at::zeros({x.size(0), saved[2].size(1)}, x.options());
    static const auto backward_op = find_op<GroupedBackwardSig>("mor_ext::grouped_lora_backward");
    auto [grad_x, grad_A, grad_B, grad_w] = backward_op.call(grad_out, x, saved[1], saved[2], saved[3], saved[4],
                                                             saved[5], ctx->saved_data["scaling"].toDouble(), weight);
    // The frozen weight and bias get gradients only if someone asked for them. Edges count the tensor
    // inputs present: x, lora_A, lora_B, lora_index, lora_weight (0-4), then weight and bias when given.
    const Tensor grad_base = has_weight && ctx->needs_input_grad(5) ? grad_out.t().mm(x) : Tensor();
    const Tensor grad_bias = has_bias && ctx->needs_input_grad(has_weight ? 6 : 5) ? grad_out.sum(0) : Tensor();
    return {grad_x, grad_A, grad_B, Tensor(), grad_w, Tensor(), grad_base, grad_bias};
  }
};

Tensors2 grouped_lora_autograd(const Tensor& x, const Tensor& lora_A, const Tensor& lora_B, const Tensor& lora_index,
                               const Tensor& lora_weight, double scaling, const std::optional<Tensor>& weight,
                               const std::optional<Tensor>& bias) {
  const variable_list out =
      GroupedLoraFunction::apply(x, lora_A, lora_B, lora_index, lora_weight, scaling, weight, bias);
  return {out[0], out[1]};
}

// ------------------------------------------------------------------------------------------ losses
// A list argument is one autograd input per tensor: backward returns one gradient per list element,
// then one (undefined) per non-tensor argument.
using BalanceLayersSig = Tensor(at::TensorList, at::TensorList, const Tensor&, IntList, IntList, IntList);
using BalanceLayersBackwardSig = std::vector<Tensor>(const Tensor&, at::TensorList, at::TensorList, const Tensor&,
                                                     IntList, IntList, IntList);

class BalanceLayersFunction : public torch::autograd::Function<BalanceLayersFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, at::TensorList router_probs, at::TensorList lora_index,
                               const Tensor& role_ids, std::vector<int64_t> num_experts, std::vector<int64_t> top_k,
                               std::vector<int64_t> has_shared) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    static const auto op = find_op<BalanceLayersSig>("mor_ext::load_balance_loss_layers");
    Tensor loss = op.call(router_probs, lora_index, role_ids, num_experts, top_k, has_shared);
    ctx->saved_data["num_experts"] = num_experts;
    ctx->saved_data["top_k"] = top_k;
    ctx->saved_data["has_shared"] = has_shared;
    ctx->saved_data["layers"] = static_cast<int64_t>(router_probs.size());
    variable_list saved(router_probs.begin(), router_probs.end());
    saved.insert(saved.end(), lora_index.begin(), lora_index.end());
    saved.push_back(role_ids);
    ctx->save_for_backward(saved);
    return {loss};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const auto layers = static_cast<size_t>(ctx->saved_data["layers"].toInt());
    const std::vector<Tensor> probs(saved.begin(), saved.begin() + layers);
    const std::vector<Tensor> index(saved.begin() + layers, saved.begin() + 2 * layers);
    static const auto backward_op = find_op<BalanceLayersBackwardSig>("mor_ext::load_balance_loss_layers_backward");
    std::vector<Tensor> grad_probs =
        backward_op.call(grads[0], probs, index, saved[2 * layers], ctx->saved_data["num_experts"].toIntVector(),
                         ctx->saved_data["top_k"].toIntVector(), ctx->saved_data["has_shared"].toIntVector());
    variable_list out(std::move(grad_probs));
    out.resize(2 * layers + 4);  // lora_index, role_ids and the three spec lists: no gradient
    return out;
  }
};

Tensor load_balance_loss_layers_autograd(at::TensorList router_probs, at::TensorList lora_index,
                                         const Tensor& role_ids, IntList num_experts, IntList top_k,
                                         IntList has_shared) {
  if (!needs_graph(router_probs)) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    static const auto op = find_op<BalanceLayersSig>("mor_ext::load_balance_loss_layers");
    return op.call(router_probs, lora_index, role_ids, num_experts, top_k, has_shared);
  }
  return BalanceLayersFunction::apply(router_probs, lora_index, role_ids, num_experts.vec(), top_k.vec(),
                                      has_shared.vec())[0];
}

using OrthLayersSig = Tensors2(at::TensorList, at::TensorList, IntList, IntList, IntList);
using OrthLayersBackwardSig = std::tuple<std::vector<Tensor>, std::vector<Tensor>>(
    const Tensor&, const Tensor&, at::TensorList, at::TensorList, IntList, IntList, IntList);

class OrthLayersFunction : public torch::autograd::Function<OrthLayersFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, at::TensorList lora_A, at::TensorList lora_B,
                               std::vector<int64_t> num_experts, std::vector<int64_t> top_k,
                               std::vector<int64_t> has_shared) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    static const auto op = find_op<OrthLayersSig>("mor_ext::orthogonal_loss_layers");
    auto [loss, products] = op.call(lora_A, lora_B, num_experts, top_k, has_shared);
    ctx->saved_data["num_experts"] = num_experts;
    ctx->saved_data["top_k"] = top_k;
    ctx->saved_data["has_shared"] = has_shared;
    ctx->saved_data["layers"] = static_cast<int64_t>(lora_A.size());
    // The forward's r x r products: the backward builds every gradient from them.
    variable_list saved{products};
    saved.insert(saved.end(), lora_A.begin(), lora_A.end());
    saved.insert(saved.end(), lora_B.begin(), lora_B.end());
    ctx->save_for_backward(saved);
    ctx->mark_non_differentiable({products});
    return {loss, products};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const auto layers = static_cast<size_t>(ctx->saved_data["layers"].toInt());
    const std::vector<Tensor> lora_A(saved.begin() + 1, saved.begin() + 1 + layers);
    const std::vector<Tensor> lora_B(saved.begin() + 1 + layers, saved.begin() + 1 + 2 * layers);
    static const auto backward_op = find_op<OrthLayersBackwardSig>("mor_ext::orthogonal_loss_layers_backward");
    auto [grad_A, grad_B] = backward_op.call(grads[0], saved[0], lora_A, lora_B,
                                             ctx->saved_data["num_experts"].toIntVector(),
                                             ctx->saved_data["top_k"].toIntVector(),
                                             ctx->saved_data["has_shared"].toIntVector());
    variable_list out(std::move(grad_A));
    out.insert(out.end(), std::make_move_iterator(grad_B.begin()), std::make_move_iterator(grad_B.end()));
    out.resize(2 * layers + 3);  // the three spec lists: no gradient
    return out;
  }
};

Tensors2 orthogonal_loss_layers_autograd(at::TensorList lora_A, at::TensorList lora_B, IntList num_experts,
                                         IntList top_k, IntList has_shared) {
  if (!needs_graph(lora_A, lora_B)) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    static const auto op = find_op<OrthLayersSig>("mor_ext::orthogonal_loss_layers");
    return op.call(lora_A, lora_B, num_experts, top_k, has_shared);
  }
  const variable_list out =
      OrthLayersFunction::apply(lora_A, lora_B, num_experts.vec(), top_k.vec(), has_shared.vec());
  return {out[0], out[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(mor_ext, Autograd, m) {
  m.impl("mor_linear", &mor_linear_autograd);
  m.impl("route", &route_autograd);
  m.impl("grouped_lora", &grouped_lora_autograd);
  m.impl("load_balance_loss_layers", &load_balance_loss_layers_autograd);
  m.impl("orthogonal_loss_layers", &orthogonal_loss_layers_autograd);
}

}  // namespace mor_ext
