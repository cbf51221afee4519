"""Per-image noise and seed rules (modules/sampling/rng.py), checked against plain torch generators."""

import random

import pytest
import torch
from diffusers.utils.torch_utils import randn_tensor

from modules.sampling.rng import (
    MAX_RANDOM_SEED,
    ImageRNG,
    fixed_seed,
    generator_device_for,
    randn,
    resolve_seeds,
    slerp,
)

SHAPE = (4, 8, 8)


def draws(seed: int, shape: tuple[int, ...], count: int) -> list[torch.Tensor]:
    """The first `count` normal tensors of a CPU generator seeded with `seed`: the reference stream."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator) for _ in range(count)]


def test_randn_is_the_first_draw_of_a_seeded_cpu_generator():
    expected = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1234))
    assert torch.equal(randn(1234, SHAPE), expected)
    assert randn(1234, SHAPE).dtype == torch.float32


def test_same_seed_gives_the_same_bits_and_other_seeds_do_not():
    first = ImageRNG(SHAPE, [77]).first()
    assert torch.equal(first, ImageRNG(SHAPE, [77]).first())
    assert not torch.equal(first, ImageRNG(SHAPE, [78]).first())


def test_first_is_each_images_own_generator_stream():
    seeds = [10, 11, 4000000000]
    noise = ImageRNG(SHAPE, seeds).first()
    assert noise.shape == (3, *SHAPE)
    for image, seed in zip(noise, seeds, strict=True):
        assert torch.equal(image, torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed)))


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"subseed_strength": 0.4},
        {"seed_resize_from_h": 6, "seed_resize_from_w": 10},
        {"subseed_strength": 0.7, "seed_resize_from_h": 12, "seed_resize_from_w": 4, "ensd": 31337},
    ],
    ids=["plain", "variation", "seed-resize", "everything"],
)
def test_a_batch_equals_the_concatenated_single_images(options):
    seeds, subseeds = [500, 501, 502], [900, 901, 902]
    batch_rng = ImageRNG(SHAPE, seeds, subseeds, **options)
    batch = batch_rng.first()
    singles = [ImageRNG(SHAPE, [seed], [subseed], **options) for seed, subseed in zip(seeds, subseeds, strict=True)]
    assert torch.equal(batch, torch.cat([single.first() for single in singles]))
    # The step noise continues per image too.
    assert torch.equal(batch_rng.next(), torch.cat([single.next() for single in singles]))


def test_first_is_repeatable():
    rng = ImageRNG(SHAPE, [3, 4], [8, 9], subseed_strength=0.5)
    assert torch.equal(rng.first(), rng.first())


def test_generators_continue_after_the_start_noise():
    seeds = [42, 43]
    rng = ImageRNG(SHAPE, seeds)
    rng.first()
    second = torch.cat([torch.randn((1, *SHAPE), generator=generator) for generator in rng.generators])
    expected = torch.stack([draws(seed, SHAPE, 2)[1] for seed in seeds])
    assert torch.equal(second, expected)


def test_next_draws_the_start_noise_then_the_following_draws():
    rng = ImageRNG(SHAPE, [5])
    streams = draws(5, SHAPE, 3)
    for expected in streams:
        assert torch.equal(rng.next()[0], expected)


def test_diffusers_randn_tensor_with_the_generator_list_draws_each_images_next_tensor():
    """What Euler a & co. do inside step(generator=rng.generators): one draw per image, in order."""
    seeds = [7, 8, 9]
    rng = ImageRNG(SHAPE, seeds)
    rng.first()
    step_noise = randn_tensor((3, *SHAPE), generator=rng.generators, device=torch.device("cpu"), dtype=torch.float32)
    assert torch.equal(step_noise, torch.stack([draws(seed, SHAPE, 2)[1] for seed in seeds]))


def test_ensd_reseeds_the_step_noise_but_not_the_start_noise():
    rng = ImageRNG(SHAPE, [100, 200], ensd=31337)
    start = rng.first()
    assert torch.equal(start, ImageRNG(SHAPE, [100, 200]).first())
    expected = torch.stack([draws(100 + 31337, SHAPE, 1)[0], draws(200 + 31337, SHAPE, 1)[0]])
    assert torch.equal(rng.next(), expected)


def test_slerp_endpoints_are_exact():
    low, high = randn(1, SHAPE), randn(2, SHAPE)
    assert torch.equal(slerp(0.0, low, high), low)
    assert torch.equal(slerp(1.0, low, high), high)


def test_slerp_keeps_the_noise_scale_where_a_linear_mix_would_shrink_it():
    low, high = randn(1, (4, 64, 64)), randn(2, (4, 64, 64))
    middle = slerp(0.5, low, high)
    assert abs(float(middle.std()) - 1.0) < 0.05
    assert abs(float((0.5 * low + 0.5 * high).std()) - 0.7071) < 0.05


def test_slerp_of_parallel_noise_falls_back_to_a_linear_mix():
    noise = randn(3, SHAPE)
    assert torch.allclose(slerp(0.3, noise, noise), noise, atol=1e-6)
    assert torch.allclose(slerp(0.25, noise, 2 * noise), 1.25 * noise, atol=1e-6)


def test_variation_strength_zero_and_one():
    shape = SHAPE
    plain = ImageRNG(shape, [10]).first()
    assert torch.equal(ImageRNG(shape, [10], [20], subseed_strength=0.0).first(), plain)
    assert torch.equal(ImageRNG(shape, [10], [20], subseed_strength=1.0).first()[0], randn(20, shape))
    halfway = ImageRNG(shape, [10], [20], subseed_strength=0.5).first()[0]
    assert torch.equal(halfway, slerp(0.5, randn(10, shape), randn(20, shape)))


def test_missing_subseeds_default_to_zero_as_in_a1111():
    noise = ImageRNG(SHAPE, [1, 2], [30], subseed_strength=1.0).first()
    assert torch.equal(noise[0], randn(30, SHAPE))
    assert torch.equal(noise[1], randn(0, SHAPE))


def test_seed_resize_from_a_smaller_size_pastes_it_in_the_middle():
    seed = 3
    noise = ImageRNG((4, 12, 12), [seed], seed_resize_from_h=8, seed_resize_from_w=8).first()[0]
    small = randn(seed, (4, 8, 8))
    full = randn(seed, (4, 12, 12))
    assert torch.equal(noise[:, 2:10, 2:10], small)
    outside = torch.ones(12, 12, dtype=torch.bool)
    outside[2:10, 2:10] = False
    assert torch.equal(noise[:, outside], full[:, outside])


def test_seed_resize_from_a_larger_size_crops_its_middle():
    noise = ImageRNG((4, 8, 8), [3], seed_resize_from_h=12, seed_resize_from_w=12).first()[0]
    assert torch.equal(noise, randn(3, (4, 12, 12))[:, 2:10, 2:10])


def test_seed_resize_taller_and_narrower():
    # From 6 high x 10 wide into 8x8: rows are padded (offset 1), columns cropped (offset 1).
    noise = ImageRNG((4, 8, 8), [9], seed_resize_from_h=6, seed_resize_from_w=10).first()[0]
    source = randn(9, (4, 6, 10))
    assert torch.equal(noise[:, 1:7, :], source[:, :, 1:9])
    full = randn(9, (4, 8, 8))
    assert torch.equal(noise[:, 0, :], full[:, 0, :])
    assert torch.equal(noise[:, 7, :], full[:, 7, :])


def test_seed_resize_with_variation_mixes_at_the_original_size():
    noise = ImageRNG((4, 12, 12), [3], [4], 0.5, seed_resize_from_h=8, seed_resize_from_w=8).first()[0]
    assert torch.equal(noise[:, 2:10, 2:10], slerp(0.5, randn(3, (4, 8, 8)), randn(4, (4, 8, 8))))


def test_seed_resize_is_off_unless_both_sides_are_positive():
    plain = ImageRNG(SHAPE, [5]).first()
    assert torch.equal(ImageRNG(SHAPE, [5], seed_resize_from_h=-1, seed_resize_from_w=-1).first(), plain)
    assert torch.equal(ImageRNG(SHAPE, [5], seed_resize_from_h=6, seed_resize_from_w=0).first(), plain)


def test_sources():
    assert generator_device_for("CPU", "cpu") == torch.device("cpu")
    # On a CPU-only target the GPU source is the CPU generator: the same numbers.
    assert generator_device_for("gpu", "cpu") == torch.device("cpu")
    assert torch.equal(ImageRNG(SHAPE, [6], source="GPU").first(), ImageRNG(SHAPE, [6], source="CPU").first())
    assert generator_device_for("GPU", "mps") == torch.device("cpu")
    with pytest.raises(ValueError, match=r"^Random number source 'NV' .* is not supported; use 'GPU' or 'CPU'\.$"):
        ImageRNG(SHAPE, [1], source="NV")
    with pytest.raises(ValueError, match=r"^Unknown random number source 'TPU'\. Valid sources: GPU, CPU$"):
        ImageRNG(SHAPE, [1], source="TPU")


def test_resolve_seeds_counts_up_from_the_seed():
    assert resolve_seeds(100, 3, subseed=50) == ([100, 101, 102], [50, 51, 52])


def test_resolve_seeds_keeps_the_seed_for_variations():
    assert resolve_seeds(100, 3, subseed=50, subseed_strength=0.3) == ([100, 100, 100], [50, 51, 52])


def test_resolve_seeds_minus_one_is_random_in_a1111s_range():
    random.seed(2024)
    expected_seed = random.randrange(4294967294)
    expected_subseed = random.randrange(4294967294)
    random.seed(2024)
    seeds, subseeds = resolve_seeds(-1, 2)
    assert seeds == [expected_seed, expected_seed + 1]
    assert subseeds == [expected_subseed, expected_subseed + 1]
    for _ in range(200):
        assert 0 <= fixed_seed(-1) < MAX_RANDOM_SEED == 4294967294


def test_fixed_seed_accepts_what_a1111_accepts():
    assert fixed_seed(5) == 5
    assert fixed_seed("123") == 123
    assert fixed_seed(-2) == -2
    for random_request in (None, "", "not a number", "-1"):
        assert 0 <= fixed_seed(random_request) < MAX_RANDOM_SEED


def test_imagerng_needs_a_seed():
    with pytest.raises(ValueError, match="at least one seed"):
        ImageRNG(SHAPE, [])
