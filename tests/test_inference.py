"""The one inference path: probabilities, top predictions, and each layer's output."""

import numpy as np
import pytest
from scipy.special import softmax as scipy_softmax

from cnncli.inspect.walk import Field, feature_groups, fields, walk
from cnncli.nn.inference import layer_outputs, probabilities
from cnncli.nn.model import model_from_entries
from cnncli.training.evaluate import top_predictions

ENTRIES = [{"type": "conv2d", "out_channels": 3, "kernel_size": 3, "padding": 1,
            "name": "conv"},
           {"type": "relu", "name": "act"},
           {"type": "maxpool2d", "kernel_size": 2, "name": "pool"},
           {"type": "flatten"}, {"type": "dense", "units": 4, "name": "fc"}]


def _model():
    return model_from_entries((2, 6, 6), ENTRIES, dtype=np.float64, seed=3)


def test_probabilities_are_scipys_softmax_in_float64():
    logits = np.random.default_rng(0).standard_normal((5, 7)).astype(np.float32) * 30
    got = probabilities(logits)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, scipy_softmax(logits.astype(np.float64), axis=1),
                               rtol=1e-12, atol=1e-300)


def test_layer_outputs_are_each_layer_of_the_forward_and_stay_unchanged():
    model = _model()
    # One image, as `cnncli show` runs it: its NCHW output can be a view of the layer's.
    x = np.random.default_rng(1).standard_normal((1, 2, 6, 6))
    outputs = list(layer_outputs(model, x))   # all drawn before any is looked at
    assert [i for i, _ in outputs] == list(range(len(model.layers)))
    assert [o.shape[1:] for _, o in outputs] == [tuple(s) for s in model.shapes[1:]]
    np.testing.assert_allclose(outputs[-1][1], model.forward(x), rtol=1e-12)
    conv = outputs[0][1]
    assert conv.min() < 0   # the ReLU after it did not clip the conv output in place
    np.testing.assert_array_equal(outputs[1][1], np.maximum(conv, 0))


def test_top_predictions_rank_by_probability_and_name_the_classes():
    model = _model()
    x = np.random.default_rng(2).standard_normal((3, 2, 6, 6))
    rows = top_predictions(model, x, ["a", "b", "c"], ["w", "x", "y", "z"], top=2)
    expected = scipy_softmax(model.forward(x), axis=1)
    for (label, ranked), want, probs in zip(rows, "abc", expected, strict=True):
        assert label == want and len(ranked) == 2
        order = np.argsort(-probs)[:2]
        assert [name for name, _ in ranked] == ["wxyz"[c] for c in order]
        assert [p for _, p in ranked] == pytest.approx(probs[order], rel=1e-12)
    wrong_names = top_predictions(model, x[:1], ["a"], ["only", "two"], top=9)
    assert sorted(name for name, _ in wrong_names[0][1]) == ["0", "1", "2", "3"]


def test_field_steps_as_the_textbook_recursion():
    # 3x3 pad 1 conv, then 2x2 stride 2 pool, then 3x3 dilation 2 conv.
    field = Field().through(((3, 3), (1, 1), (1, 1), (1, 1)))
    assert field == Field((-1, -1), (3, 3), (1, 1))
    field = field.through(((2, 2), (2, 2), (0, 0), (1, 1)))
    assert field == Field((-1, -1), (4, 4), (2, 2))
    field = field.through(((3, 1), (1, 1), (0, 0), (2, 1)))
    assert field == Field((-1, -1), (4 + 2 * 2 * 2, 4), (2, 2))


def test_walk_groups_each_window_with_the_pointwise_layers_after_it():
    model = _model()
    steps = walk(model.layers, model.input_shape)
    assert [s.out_shape for s in steps] == [tuple(s) for s in model.shapes[1:]]
    assert [s.pointwise for s in steps] == [False, True, False, False, False]
    assert feature_groups(model.layers, model.shapes) == [(0, 1), (2, 2)]
    seen = fields(steps)
    assert seen[3] is None and seen[4] is None   # flat: no input box
    assert seen[2].size == (4, 4) and seen[2].jump == (2, 2)


def test_a_branch_ends_a_feature_group_so_each_picture_is_an_output_some_layer_reads():
    """DenseNet-like: the stem's raw output feeds the concat too, so the stem is pictured on
    its own and not folded into the norm and relu that read it (their output is not what the
    concat sees)."""
    entries = [{"type": "conv2d", "out_channels": 3, "kernel_size": 3, "padding": 1,
                "name": "stem"},
               {"type": "batchnorm2d", "name": "norm"}, {"type": "relu", "name": "act"},
               {"type": "conv2d", "out_channels": 2, "kernel_size": 3, "padding": 1,
                "name": "conv"},
               {"type": "concat", "from": [0, 3], "name": "cat"},
               {"type": "relu", "name": "act2"},
               {"type": "maxpool2d", "kernel_size": 2, "name": "pool"},
               {"type": "relu", "name": "act3"}]
    model = model_from_entries((1, 6, 6), entries, dtype=np.float64)
    assert feature_groups(model.layers, model.shapes, model.sources) == [
        (0, 0), (3, 3), (6, 7)]
