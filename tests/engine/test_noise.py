import torch

from modules.engine import noise


def test_noise_is_per_seed_and_batch_independent():
    shape = (4, 8, 8)
    batch = noise.batch_noise([10, 11, 12], shape)
    for i, seed in enumerate([10, 11, 12]):
        alone = noise.batch_noise([seed], shape)[0]
        assert torch.equal(batch[i], alone)
    assert not torch.equal(batch[0], batch[1])


def test_noise_matches_a_plain_cpu_generator():
    # The numbers A1111 draws with its CPU RNG source: torch.randn with a generator seeded by the seed.
    expected = torch.randn((4, 8, 8), generator=torch.Generator("cpu").manual_seed(1234))
    assert torch.equal(noise.image_noise(1234, (4, 8, 8)), expected)


def test_variation_seed_interpolates_between_the_two_noises():
    a = noise.image_noise(1, (4, 8, 8))
    b = noise.image_noise(2, (4, 8, 8))
    assert torch.equal(noise.image_noise(1, (4, 8, 8), subseed=2, subseed_strength=0.0), a)
    full = noise.image_noise(1, (4, 8, 8), subseed=2, subseed_strength=1.0)
    assert torch.allclose(full, b, atol=1e-5)
    half = noise.image_noise(1, (4, 8, 8), subseed=2, subseed_strength=0.5)
    assert not torch.allclose(half, a) and not torch.allclose(half, b)
    # spherical, not linear: the norm stays near the norm of unit gaussian noise
    assert abs(half.norm() / a.norm() - 1) < 0.1


def test_seed_resize_pastes_the_original_composition_in_the_centre():
    small = noise.image_noise(7, (4, 8, 8))
    big = noise.image_noise(7, (4, 12, 16), seed_resize_from=(8, 8))
    assert torch.equal(big[:, 2:10, 4:12], small)
    shrunk = noise.image_noise(7, (4, 4, 4), seed_resize_from=(8, 8))
    assert torch.equal(shrunk, small[:, 2:6, 2:6])
