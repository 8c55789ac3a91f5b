"""Forecast the next value of a time series from the previous k values with an LSTM.

The usual starting point: one long series, cut into sliding windows of k steps, each
window labelled with the value that follows it (many-to-one). The series here is
synthetic (two seasonal cycles, a slow trend and noise) so the script runs anywhere;
swap in your own 1-d array for `series`.

Run:  python examples/forecast_timeseries.py
"""

import math

import numpy

from predtext import nn

WINDOW = 32  # k: how many past steps the model sees
HIDDEN = 32
EPOCHS = 12
BATCH = 64
NOISE = 0.1  # standard deviation of the noise in the synthetic series


def make_series(n, rng):
    t = numpy.arange(n)
    seasonal = numpy.sin(2 * math.pi * t / 50) + 0.5 * numpy.sin(2 * math.pi * t / 13)
    trend = 0.0005 * t
    return seasonal + trend + NOISE * rng.standard_normal(n)


def sliding_windows(series, k):
    """Windows (N, k, 1), batch first as users usually hold them, and next values (N, 1)."""
    windows = numpy.lib.stride_tricks.sliding_window_view(series[:-1], k)
    return windows[..., None].astype(numpy.float32), series[k:, None].astype(numpy.float32)


class Forecaster(nn.Module):
    """LSTM over the window; a linear head reads the last layer's final hidden state."""

    def __init__(self, hidden, rng):
        super().__init__()
        self.lstm = nn.LSTM(1, hidden, batch_first=True, rng=rng)
        self.head = nn.Linear(hidden, 1, rng=rng)

    def forward(self, windows):
        _, (h_n, _) = self.lstm(windows)
        return self.head(h_n[-1])

    def begin_update(self, windows):
        (output, (h_n, c_n)), backprop_lstm = self.lstm.begin_update(windows)
        prediction, backprop_head = self.head.begin_update(h_n[-1])

        def backprop(d_prediction):
            # Only the final state feeds the head: the per-step outputs get no gradient.
            d_h_n = numpy.zeros_like(h_n)
            d_h_n[-1] = backprop_head(d_prediction)
            backprop_lstm(numpy.zeros_like(output), (d_h_n, None))

        return prediction, backprop


def main():
    rng = numpy.random.default_rng(0)
    series = make_series(4000, rng)

    # Split in time (no shuffling across the cut), and scale with training statistics only.
    cut = int(len(series) * 0.8)
    mean, std = series[:cut].mean(), series[:cut].std()
    scaled = (series - mean) / std
    train_x, train_y = sliding_windows(scaled[:cut], WINDOW)
    test_x, test_y = sliding_windows(scaled[cut - WINDOW:], WINDOW)

    model = Forecaster(HIDDEN, rng)
    optimizer = nn.Adam(model.parameters(), lr=1e-2)
    steps_per_epoch = len(train_x) // BATCH
    schedule = nn.CosineWithWarmup(optimizer, warmup_steps=50,
                                   total_steps=EPOCHS * steps_per_epoch)

    for epoch in range(EPOCHS):
        order = rng.permutation(len(train_x))
        total = 0.0
        for step in range(steps_per_epoch):
            batch = order[step * BATCH:(step + 1) * BATCH]
            prediction, backprop = model.begin_update(train_x[batch])
            loss, d_prediction = nn.mse_loss(prediction, train_y[batch])
            optimizer.zero_grad()
            backprop(d_prediction)
            nn.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            total += loss
        print(f"epoch {epoch + 1:2d}  train mse {total / steps_per_epoch:.4f}")

    model.eval()
    prediction = model(test_x)
    rmse = math.sqrt(float(((prediction - test_y) ** 2).mean())) * std
    naive = math.sqrt(float(((test_x[:, -1] - test_y) ** 2).mean())) * std
    # No forecaster can beat the noise in the values it predicts.
    print(f"test RMSE  LSTM {rmse:.4f}   last value {naive:.4f}   noise alone {NOISE:.4f}")


if __name__ == "__main__":
    main()
