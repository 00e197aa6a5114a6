"""Backup codes over HTTP: shown once, hashed, each usable once, own failure budget."""

from __future__ import annotations

import concurrent.futures

from tests.conftest import LiveServer, new_user


def test_generated_codes_are_ten_64_bit_codes_shown_once(server: LiveServer) -> None:
    client = server.client(new_user())
    generated = client.post("/mfa/backup-codes/generate")
    assert generated.status_code == 201
    codes = generated.json()["codes"]
    assert len(codes) == 10
    assert len(set(codes)) == 10
    assert all(len(c.replace("-", "")) == 16 and int(c.replace("-", ""), 16) >= 0 for c in codes)
    assert client.get("/mfa/backup-codes/count").json() == {"remaining": 10, "total": 10}
    overview = client.get("/mfa/backup-codes")
    assert overview.status_code == 200
    assert not any(code in overview.text for code in codes)


def test_each_code_works_once_and_regeneration_revokes_the_old_set(server: LiveServer) -> None:
    client = server.client(new_user())
    codes = client.post("/mfa/backup-codes/generate").json()["codes"]
    used = client.post("/mfa/backup-codes/verify", json={"code": codes[0].upper()})
    assert used.status_code == 200
    assert used.json() == {"verified": True, "remaining": 9}
    again = client.post("/mfa/backup-codes/verify", json={"code": codes[0]})
    assert again.status_code == 403
    assert again.json()["code"] == "invalid_code"
    assert client.get("/mfa/backup-codes/count").json() == {"remaining": 9, "total": 10}

    fresh = client.post("/mfa/backup-codes/generate").json()["codes"]
    stale = client.post("/mfa/backup-codes/verify", json={"code": codes[1]})
    assert stale.status_code == 403
    ok = client.post("/mfa/backup-codes/verify", json={"code": fresh[1].replace("-", " ")})
    assert ok.status_code == 200
    assert ok.json()["remaining"] == 9


def test_a_reused_code_is_invalid_even_after_the_last_one_was_spent(server: LiveServer) -> None:
    """API.md: a reused code is 403 `invalid_code` with `attempts_remaining`; a spent set is
    no reason to answer otherwise (it once said 409 `not_enrolled`)."""
    client = server.client(new_user())
    codes = client.post("/mfa/backup-codes/generate").json()["codes"]
    challenge = client.post("/mfa/challenge", json={"method": "backup_code"}).json()
    for code in codes:
        assert client.post("/mfa/backup-codes/verify", json={"code": code}).status_code == 200
    assert client.get("/mfa/backup-codes/count").json() == {"remaining": 0, "total": 10}
    for attempt in (
        client.post("/mfa/backup-codes/verify", json={"code": codes[-1]}),
        client.post(
            "/mfa/step-up", json={"challenge_id": challenge["challenge_id"], "code": codes[0]}
        ),
    ):
        assert attempt.status_code == 403, attempt.text
        assert attempt.json()["code"] == "invalid_code"
        assert "attempts_remaining" in attempt.json()
    # but no new challenge is opened for a spent set
    assert client.post("/mfa/challenge", json={"method": "backup_code"}).status_code == 409


def test_twenty_concurrent_uses_of_one_code_let_exactly_one_through(server: LiveServer) -> None:
    client = server.client(new_user())
    code = client.post("/mfa/backup-codes/generate").json()["codes"][0]

    def attempt(_: int) -> int:
        return client.post("/mfa/backup-codes/verify", json={"code": code}).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(attempt, range(20)))
    assert statuses.count(200) == 1, statuses
    assert all(s in (200, 403, 409, 429) for s in statuses), statuses
    assert client.get("/mfa/backup-codes/count").json()["remaining"] == 9


def test_wrong_codes_lock_backup_codes_but_not_totp(server: LiveServer) -> None:
    client = server.client(new_user())
    codes = client.post("/mfa/backup-codes/generate").json()["codes"]
    for remaining in (4, 3, 2, 1, 0):
        bad = client.post("/mfa/backup-codes/verify", json={"code": "0000-0000-0000-0000"})
        assert bad.json()["attempts_remaining"] == remaining
    locked = client.post("/mfa/backup-codes/verify", json={"code": codes[0]})
    assert locked.status_code == 429
    assert "Retry-After" in locked.headers
    totp = client.post("/mfa/totp/setup")
    assert totp.status_code == 201
    server.clock.advance(31)
    assert client.post("/mfa/backup-codes/verify", json={"code": codes[0]}).status_code == 200


def test_admins_see_counts_but_never_codes(server: LiveServer) -> None:
    user = new_user()
    client = server.client(user)
    codes = client.post("/mfa/backup-codes/generate").json()["codes"]
    client.post("/mfa/backup-codes/verify", json={"code": codes[3]})
    admin = server.client("root", "mfa:admin")
    one = admin.get(f"/admin/mfa/backup-codes/{user}")
    assert one.status_code == 200
    assert one.json()["remaining"] == 9
    listing = admin.get("/admin/mfa/backup-codes", params={"limit": 200})
    assert user in [item["user_id"] for item in listing.json()["items"]]
    assert not any(code in listing.text + one.text for code in codes)
    assert server.client(user).get(f"/admin/mfa/backup-codes/{user}").status_code == 403
