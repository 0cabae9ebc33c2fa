"""The training loop: the defaults reach their accuracy on both shipped datasets, runs are
reproducible bit for bit, training can be stopped between batches, evaluation is right."""

import io
import math
import time

import numpy as np
import pytest

from cnnlab.core.datasets import load_digits, load_mnist
from cnnlab.core.losses import cross_entropy
from cnnlab.core.model import load_model, tiny_cnn
from cnnlab.core.optim import SGD, Adam
from cnnlab.core.train import DEFAULTS, evaluate, default_setup, train


def run_defaults(dataset):
    model, optimizer, kwargs = default_setup(dataset)
    started = time.perf_counter()
    records = list(train(model, dataset, optimizer, **kwargs))
    return model, records, time.perf_counter() - started


@pytest.fixture(scope="module")
def digits_run():
    return run_defaults(load_digits())


@pytest.fixture(scope="module")
def mnist_run():
    return run_defaults(load_mnist())


def test_defaults_reach_95_percent_on_digits(digits_run):
    model, records, seconds = digits_run
    final = records[-1]
    assert final.kind == "epoch" and final.epoch == DEFAULTS["digits"]["epochs"]
    assert final.test_accuracy >= 0.95, f"digits: {final.test_accuracy:.2%} held-out after {seconds:.1f} s"
    # Independent of the loop's own bookkeeping: evaluate the trained model afresh.
    ds = load_digits()
    assert evaluate(model, ds.x_test, ds.y_test).accuracy == final.test_accuracy


def test_defaults_reach_96_percent_on_mnist(mnist_run):
    model, records, seconds = mnist_run
    final = records[-1]
    assert final.test_accuracy >= 0.96, f"mnist: {final.test_accuracy:.2%} held-out after {seconds:.1f} s"
    assert final.train_accuracy > 0.9


def test_records_describe_the_run(digits_run):
    _, records, _ = digits_run
    ds, d = load_digits(), DEFAULTS["digits"]
    batches = math.ceil(len(ds.y_train) / d["batch_size"])
    assert len(records) == d["epochs"] * (batches + 1)
    epoch_ends = [r for r in records if r.kind == "epoch"]
    assert [r.epoch for r in epoch_ends] == list(range(1, d["epochs"] + 1))
    assert all(r.test_loss is not None and 0 <= r.test_accuracy <= 1 for r in epoch_ends)
    first_epoch = [r for r in records if r.kind == "batch" and r.epoch == 1]
    assert [r.batch for r in first_epoch] == list(range(1, batches + 1))
    assert all(r.batches_per_epoch == batches and r.test_accuracy is None for r in first_epoch)
    assert [r.step for r in records if r.kind == "batch"] == list(range(1, d["epochs"] * batches + 1))
    # epoch_loss is the running mean of the batch losses, weighted by batch size.
    sizes = [d["batch_size"]] * (batches - 1) + [len(ds.y_train) - d["batch_size"] * (batches - 1)]
    running = np.cumsum([r.loss * n for r, n in zip(first_epoch, sizes)]) / np.cumsum(sizes)
    assert np.allclose([r.epoch_loss for r in first_epoch], running)
    elapsed = [r.elapsed for r in records]
    assert elapsed == sorted(elapsed)
    assert set(records[0].to_dict()) >= {"epoch", "batch", "batches_per_epoch", "loss", "epoch_loss",
                                         "train_accuracy", "elapsed", "test_loss", "test_accuracy", "lr"}


def test_trained_model_survives_save_and_load(mnist_run):
    model, _, _ = mnist_run
    buffer = io.BytesIO()
    model.save(buffer)
    buffer.seek(0)
    loaded = load_model(buffer)
    x = load_mnist().x_test[:300]
    assert np.array_equal(model.predict_proba(x), loaded.predict_proba(x))


def short_run(seed, optimizer=None, epochs=2):
    ds = load_digits()
    model = tiny_cnn(input_shape=ds.image_shape, seed=1)
    records = list(train(model, ds, optimizer or Adam(0.01), epochs=epochs, batch_size=64, seed=seed))
    return model, records


def curve(records):
    return [(r.kind, r.step, r.loss, r.epoch_loss, r.train_accuracy, r.test_loss, r.test_accuracy) for r in records]


def test_same_seed_gives_bit_identical_weights_and_curves():
    a, rec_a = short_run(seed=5)
    b, rec_b = short_run(seed=5)
    c, rec_c = short_run(seed=6)
    assert np.array_equal(a.flat_params, b.flat_params)
    assert curve(rec_a) == curve(rec_b)
    assert not np.array_equal(a.flat_params, c.flat_params)
    assert curve(rec_a) != curve(rec_c)


def test_should_stop_is_checked_between_batches():
    ds = load_digits()
    model = tiny_cnn(input_shape=ds.image_shape)
    optimizer = SGD(0.1)
    seen, snapshot = [], None
    for record in train(model, ds, optimizer, epochs=3, batch_size=32, seed=0, should_stop=lambda: len(seen) >= 5):
        if record.kind == "batch":
            seen.append(record)
            snapshot = model.flat_params.copy()
        else:
            last = record
    assert last.kind == "stopped" and last.step == 5 and last.epoch == 1 and last.batch == 5
    assert optimizer.t == 5
    assert np.array_equal(model.flat_params, snapshot)     # nothing trained after the stop


def test_elapsed_counts_training_not_the_consumer():
    ds = load_digits()
    model = tiny_cnn(input_shape=ds.image_shape)
    records = []
    for record in train(model, ds, SGD(0.1), epochs=1, batch_size=32, seed=0, should_stop=lambda: len(records) >= 3):
        records.append(record)
        time.sleep(0.15)
    assert records[-1].kind == "stopped"
    assert records[-1].elapsed < 0.12, [r.elapsed for r in records]


def test_eval_every_adds_held_out_metrics_mid_epoch():
    ds = load_digits()
    model = tiny_cnn(input_shape=ds.image_shape)
    records = list(train(model, ds, Adam(0.01), epochs=1, batch_size=100, seed=0, eval_every=5))
    evaluated = [r.batch for r in records if r.kind == "batch" and r.test_accuracy is not None]
    assert evaluated == [5, 10]
    assert records[-1].kind == "epoch" and records[-1].test_accuracy is not None


def test_lr_decay_shrinks_the_learning_rate_after_each_epoch():
    ds = load_digits()
    model, optimizer = tiny_cnn(input_shape=ds.image_shape), SGD(0.1)
    records = list(train(model, ds, optimizer, epochs=3, batch_size=500, seed=0, lr_decay=0.5))
    assert [r.lr for r in records if r.kind == "epoch"] == [0.1, 0.05, 0.025]
    assert optimizer.lr == 0.0125
    assert optimizer.explain("0.b", 0)["lr"] == 0.025      # the lr the last update really used
    with pytest.raises(ValueError):
        next(train(model, ds, optimizer, epochs=1, batch_size=500, seed=0, lr_decay=0))


def test_evaluate_accuracy_loss_and_confusion_matrix():
    ds = load_digits()
    model = tiny_cnn(input_shape=ds.image_shape, seed=2)
    list(train(model, ds, Adam(0.01), epochs=1, batch_size=64, seed=0))
    result = evaluate(model, ds.x_test, ds.y_test, batch_size=50)
    predictions = model.predict(ds.x_test)
    assert result.confusion.shape == (10, 10) and result.confusion.dtype == np.int64
    assert result.confusion.sum() == result.n == len(ds.y_test)
    assert result.confusion.sum(axis=1).tolist() == np.bincount(ds.y_test, minlength=10).tolist()
    assert result.confusion.sum(axis=0).tolist() == np.bincount(predictions, minlength=10).tolist()
    assert result.accuracy == np.mean(predictions == ds.y_test)
    assert result.confusion[3, 5] == np.sum((ds.y_test == 3) & (predictions == 5))
    full_loss, _ = cross_entropy(model.forward(ds.x_test, train=False), ds.y_test)
    assert result.loss == pytest.approx(full_loss, rel=1e-5)


def test_bad_arguments_are_rejected():
    ds = load_digits()
    with pytest.raises(ValueError):
        next(train(tiny_cnn(input_shape=ds.image_shape), ds, SGD(0.1), epochs=0, batch_size=32, seed=0))
