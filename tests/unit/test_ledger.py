"""The node's note of what it allocated, per network: what GC may free."""

from whereabouts.plugin import ledger


def test_notes_are_kept_per_network_and_pruned_to_the_valid_attachments(tmp_path):
    d = str(tmp_path / "locks")
    ledger.note(d, "blue", "c1", "net1")
    ledger.note(d, "blue", "c2", "net1")
    ledger.note(d, "red/x", "c3", "net2")
    assert ledger.noted(d, "blue") == {("c1", "net1"), ("c2", "net1")}
    assert ledger.noted(d, "red/x") == {("c3", "net2")} and ledger.noted(d, "green") == set()
    ledger.keep(d, "blue", {("c2", "net1")})
    assert ledger.noted(d, "blue") == {("c2", "net1")} and ledger.noted(d, "red/x") == {("c3", "net2")}


def test_a_damaged_line_is_skipped_and_a_huge_ledger_drops_its_oldest_half(tmp_path, monkeypatch):
    d = str(tmp_path)
    ledger.note(d, "n", "c1", "net1")
    path = next(tmp_path.glob("attachments-n-*.jsonl"))
    with open(path, "a") as f:
        f.write('["cut sh')
    ledger.note(d, "n", "c2", "net1")
    assert ledger.noted(d, "n") == {("c1", "net1")}  # the cut line swallowed the next append's start
    monkeypatch.setattr(ledger, "MAX_BYTES", 200)
    for i in range(20):
        ledger.note(d, "n", f"c{i:02d}", "net1")
    kept = ledger.noted(d, "n")
    assert ("c19", "net1") in kept and ("c1", "net1") not in kept and path.stat().st_size <= 400


def test_an_unusable_directory_notes_nothing(tmp_path):
    (tmp_path / "file").write_text("")
    ledger.note(str(tmp_path / "file"), "n", "c1", "net1")
    assert ledger.noted(str(tmp_path / "file"), "n") == set()
