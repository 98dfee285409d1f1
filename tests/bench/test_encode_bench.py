"""bench/encode_bench.py on toy images: every lossless encoder gives back the input exactly."""

from __future__ import annotations

import json

from tests.bench.loading import load_bench


def test_encode_bench_measures_each_encoder_and_checks_losslessness(tmp_path, capsys):
    bench = load_bench("encode_bench")
    out = tmp_path / "encode.json"
    rows = bench.main(["--size", "64", "--repeats", "1", "--out", str(out)])
    assert json.loads(out.read_text()) and "| encoder |" in capsys.readouterr().out
    measured = [r for r in rows if r.error is None]
    names = {r.encoder for r in measured}
    assert {bench.BASELINE, "fpng (py-fpng-nb)", "engine.encode_images (default)"} <= names
    for row in measured:
        assert row.mib_per_image_max > 0 and row.fits
        if row.lossless_kind:
            assert row.decodes_to_input, row.encoder
        else:
            assert not row.decodes_to_input and row.max_abs_error > 0, row.encoder
    # Missing optional encoders are rows that say so, never a crash.
    assert all(r.error.startswith("not installed") for r in rows if r.error)
    assert (
        len({(r.images, r.encoder) for r in rows})
        == len(rows)
        == 2 * (len(bench.LOSSLESS) + len(bench.LOSSY) + 1)
    )
