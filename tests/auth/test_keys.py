from faregate.auth import keys


def test_generated_key_is_found_by_its_prefix_and_proved_by_its_hash() -> None:
    key, prefix, key_hash = keys.generate_key()
    assert keys.parse_prefix(key) == prefix
    assert keys.verify(key, key_hash)
    assert not keys.verify(key + "x", key_hash)
    assert key not in key_hash


def test_malformed_keys_have_no_prefix() -> None:
    for bad in ("", "sk-abc", "fg_", "fg_short_x", "fg_0123456789"):
        assert keys.parse_prefix(bad) is None


def test_redacted_key_shows_only_the_prefix() -> None:
    key, prefix, _ = keys.generate_key()
    shown = keys.redact(key)
    assert prefix in shown
    assert key.split("_")[-1] not in shown
