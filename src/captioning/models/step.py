"""`StepSignature`: the names and positions of the one-step decoder's inputs and outputs.

The exported `Decoder.hdf5` is one decoder step:

    [features, token (batch, 1), *states] -> [log_probs, *next_states, *initial_states
                                              (, attention)]

with the states named `h0 (c0), h1 (c1), ...`, their outputs `next_<state>` and
`initial_<state>`, and `attention` for attention models. Every module that builds, checks,
searches or trains over that model addresses its tensors through one `StepSignature`, built
from the config (what `build_decoder` creates) or read from a model (what a file holds).

Example:
>>> signature = StepSignature.from_config(CaptionConfig(cell="lstm"))  # doctest: +SKIP
>>> signature.input_names                                               # doctest: +SKIP
('features', 'token', 'h0', 'c0')
>>> log_probs, next_states, initial_states, attention = signature.split(
...     step_model(signature.arrange(features, token, states)))         # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses

from captioning.errors import ReleaseError

FEATURES = "features"
TOKEN = "token"
LOG_PROBS = "log_probs"
ATTENTION = "attention"


def state_names(cell: str, num_layers: int) -> list[str]:
    """Names of the recurrent state inputs: h0 (c0), h1 (c1), ..."""
    kinds = ("h",) if cell == "gru" else ("h", "c")
    return [f"{kind}{layer}" for layer in range(num_layers) for kind in kinds]


def next_name(state: str) -> str:
    """The output name of a state's value after the step: `next_h0`."""
    return f"next_{state}"


def initial_name(state: str) -> str:
    """The output name of a state's initial value (from the features alone): `initial_h0`."""
    return f"initial_{state}"


@dataclasses.dataclass(frozen=True)
class StepOutputs:
    """One step's outputs by role (tensors or arrays, as the model returned them)."""

    log_probs: object
    next_states: list
    initial_states: list
    attention: object = None


@dataclasses.dataclass(frozen=True)
class StepSignature:
    """The input order and the output positions of a one-step decoder.

    Attributes:
        input_names: the model's input names, in the model's order.
        output_names: the model's output names, in the model's order.
    """

    input_names: tuple
    output_names: tuple

    @classmethod
    def from_config(cls, config) -> "StepSignature":
        """The signature `build_decoder` gives a `CaptionConfig` (cell, layers, attention)."""
        states = state_names(config.cell, config.num_layers)
        outputs = _required_outputs(states)
        if config.conditioning == "attention":
            outputs.append(ATTENTION)
        return cls((FEATURES, TOKEN, *states), tuple(outputs))

    @classmethod
    def from_model(cls, model, source: str = "the step model") -> "StepSignature":
        """Reads and checks the signature of a one-step decoder model.

        Args:
            model: a Keras model (built, or loaded from `Decoder.hdf5`).
            source: how error messages name the model, e.g. `"Decoder.hdf5"`.

        Raises:
            ReleaseError: an input or output is missing; the message names `source`, what it
                has and what it needs.
        """
        inputs = tuple(tensor.name for tensor in model.inputs)
        outputs = tuple(model.output_names)
        states = [name for name in inputs if name not in (FEATURES, TOKEN)]
        wanted = _required_outputs(states)
        lacking = [name for name in wanted if name not in outputs]
        if FEATURES not in inputs or TOKEN not in inputs or lacking:
            raise ReleaseError(
                f"{source}: not a one-step caption decoder (inputs {list(inputs)}, outputs "
                f"{list(outputs)}; it needs the inputs {FEATURES} and {TOKEN} and the outputs "
                f"{wanted}); restore the decoder of the same release")
        return cls(inputs, outputs)

    @property
    def state_names(self) -> tuple:
        """The recurrent states, in input order: `("h0",)`, `("h0", "c0")`, ..."""
        return tuple(name for name in self.input_names if name not in (FEATURES, TOKEN))

    @property
    def has_attention(self) -> bool:
        return ATTENTION in self.output_names

    @property
    def features_index(self) -> int:
        return self.input_names.index(FEATURES)

    @property
    def token_index(self) -> int:
        return self.input_names.index(TOKEN)

    @property
    def state_indices(self) -> list:
        """Input positions of the states, in `state_names` order."""
        return [self.input_names.index(name) for name in self.state_names]

    @property
    def log_probs_index(self) -> int:
        return self.output_names.index(LOG_PROBS)

    @property
    def next_indices(self) -> list:
        """Output positions of `next_<state>`, in `state_names` order."""
        return [self.output_names.index(next_name(name)) for name in self.state_names]

    @property
    def initial_indices(self) -> list:
        """Output positions of `initial_<state>`, in `state_names` order."""
        return [self.output_names.index(initial_name(name)) for name in self.state_names]

    @property
    def attention_index(self) -> int | None:
        return self.output_names.index(ATTENTION) if self.has_attention else None

    def feature_shape(self, model) -> tuple:
        """One image's features as `model` takes them: `(dim,)` or `(regions, dim)`."""
        return tuple(model.inputs[self.features_index].shape[1:])

    def vocab_size(self, model) -> int:
        """The words `model` predicts (the size of its log-probabilities)."""
        return int(model.outputs[self.log_probs_index].shape[-1])

    def state_units(self, model) -> dict:
        """Units of each state input of `model`, by name."""
        return {name: int(model.inputs[i].shape[-1])
                for name, i in zip(self.state_names, self.state_indices)}

    def arrange(self, features, token, states) -> list:
        """The model's inputs in its order, from the features, the token and the states
        (in `state_names` order)."""
        by_name = {**dict(zip(self.state_names, states)), FEATURES: features, TOKEN: token}
        return [by_name[name] for name in self.input_names]

    def split(self, outputs) -> StepOutputs:
        """A step's outputs (a list, in the model's order) by role."""
        index = self.attention_index
        return StepOutputs(log_probs=outputs[self.log_probs_index],
                           next_states=[outputs[i] for i in self.next_indices],
                           initial_states=[outputs[i] for i in self.initial_indices],
                           attention=None if index is None else outputs[index])


def _required_outputs(states) -> list:
    return [LOG_PROBS, *map(next_name, states), *map(initial_name, states)]
