"""Tag every character of a text: a bidirectional LSTM learns to split words without spaces.

Each training example is a few words run together ("theredcatsat"); the tag of each
character says where it sits in its word: B(egin), I(nside), E(nd) or S(ingle letter).
Deciding whether a character ends a word needs the letters after it as well as before,
which is what the reverse direction of a bidirectional layer provides. Examples have
different lengths: the batch is padded, `lengths` tells the layer where each one ends,
and padded positions are left out of the loss with `ignore_index`. Some texts split
more than one way ("oneat" is "one at" or "on eat"), so a perfect score is out of reach.

Run:  python examples/sequence_tagging.py
"""

import numpy

from predtext import nn

WORDS = ["a", "i", "the", "cat", "dog", "sat", "ran", "on", "in", "red", "big", "old", "sun",
         "tea", "at", "an", "hat", "is", "it", "to", "not", "dot", "rat", "one", "ate", "eat",
         "tan", "ten", "net"]
TAGS = "BIES"
PAD = -100  # the loss's ignore_index
HIDDEN = 48
STEPS = 600
BATCH = 32


def tag_word(word):
    return "S" if len(word) == 1 else "B" + "I" * (len(word) - 2) + "E"


def make_batch(size, rng, max_words=8):
    """Character ids (T, B), tag ids (T, B) padded with PAD, and each example's length."""
    texts, tags = [], []
    for _ in range(size):
        words = rng.choice(WORDS, size=rng.integers(2, max_words + 1))
        texts.append("".join(words))
        tags.append("".join(tag_word(w) for w in words))
    lengths = numpy.array([len(text) for text in texts])
    chars = numpy.zeros((lengths.max(), size), dtype=numpy.int64)
    targets = numpy.full((lengths.max(), size), PAD, dtype=numpy.int64)
    for b, (text, tag) in enumerate(zip(texts, tags)):
        chars[: len(text), b] = [ord(c) - ord("a") + 1 for c in text]  # 0 is padding
        targets[: len(tag), b] = [TAGS.index(t) for t in tag]
    return chars, targets, lengths, texts


class Tagger(nn.Module):
    """Embedding -> bidirectional LSTM -> per-character tag scores."""

    def __init__(self, rng):
        super().__init__()
        self.embed = nn.Embedding(27, 16, padding_idx=0, rng=rng)
        self.lstm = nn.LSTM(16, HIDDEN, bidirectional=True, rng=rng)
        self.head = nn.Linear(2 * HIDDEN, len(TAGS), rng=rng)

    def forward(self, chars, lengths):
        features, _ = self.lstm(self.embed(chars), lengths=lengths)
        return self.head(features)

    def begin_update(self, chars, lengths):
        x, backprop_embed = self.embed.begin_update(chars)
        (features, _), backprop_lstm = self.lstm.begin_update(x, lengths=lengths)
        scores, backprop_head = self.head.begin_update(features)

        def backprop(d_scores):
            d_x, _ = backprop_lstm(backprop_head(d_scores))
            backprop_embed(d_x)

        return scores, backprop


def segment(text, tags):
    """Put spaces back where the tags say words end."""
    return "".join(c + (" " if t in "ES" else "") for c, t in zip(text, tags)).strip()


def main():
    rng = numpy.random.default_rng(0)
    model = Tagger(rng)
    optimizer = nn.Adam(model.parameters(), lr=1e-2)
    for step in range(1, STEPS + 1):
        chars, targets, lengths, _ = make_batch(BATCH, rng)
        scores, backprop = model.begin_update(chars, lengths)
        loss, d_scores = nn.softmax_cross_entropy(scores, targets, ignore_index=PAD)
        optimizer.zero_grad()
        backprop(d_scores)
        nn.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        if step % 200 == 0:
            print(f"step {step:4d}  loss {loss:.4f}")

    chars, targets, lengths, texts = make_batch(1000, rng)
    predicted = model(chars, lengths).argmax(axis=-1)
    valid = targets != PAD
    accuracy = (predicted == targets)[valid].mean()
    # The most frequent tag, for scale.
    baseline = numpy.bincount(targets[valid], minlength=len(TAGS)).max() / valid.sum()
    exact = numpy.mean([(predicted[:n, b] == targets[:n, b]).all() for b, n in enumerate(lengths)])
    print(f"character accuracy {accuracy:.4f}   (most frequent tag {baseline:.4f})   "
          f"texts segmented exactly {exact:.4f}")
    for b in range(4):
        guess = "".join(TAGS[i] for i in predicted[: lengths[b], b])
        truth = "".join(TAGS[i] for i in targets[: lengths[b], b])
        print(f"  {texts[b]:<28} -> {segment(texts[b], guess):<34} "
              f"(written: {segment(texts[b], truth)})")


if __name__ == "__main__":
    main()
