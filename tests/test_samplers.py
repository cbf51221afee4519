"""A1111 sampler/schedule names → diffusers schedulers (modules/sampling/samplers.py).

The sampling tests use an exact denoiser instead of a UNet: for data x0 ~ N(MU, STD²) per element, the noisy
sample x_t = sqrt(ᾱ) x0 + sqrt(1-ᾱ) ε has the closed-form posterior mean, so a correct sampler must end near that
distribution, and a misconfigured one (wrong prediction type, wrong sigma scale) visibly does not.
"""

import inspect
import math

import numpy as np
import pytest
import torch

from modules.sampling.samplers import (
    SAMPLERS,
    SCHEDULE_TYPES,
    SD1_SCHEDULER_CONFIG,
    Sampler,
    create_sampler,
    resolve,
    sampler_names,
    schedule_type_labels,
)

pytestmark = [
    # diffusers' schedulers trip numpy 2 deprecation warnings on every sigma lookup; recording them all is slow.
    pytest.mark.filterwarnings("ignore:__array:DeprecationWarning"),
    # torchsde, on DPM++ SDE's last step: float32 rounding puts the query a hair below the Brownian tree's start.
    pytest.mark.filterwarnings("ignore:Should have ta>=t0"),
]

SD2_V_CONFIG = {**SD1_SCHEDULER_CONFIG, "prediction_type": "v_prediction"}
LATENT_SHAPE = (4, 8, 8)
STEPS = 10
MU, STD = 0.3, 0.5

SAMPLER_SCHEDULE_PAIRS = [(info.name, schedule) for info in SAMPLERS for schedule in info.schedules]
STOCHASTIC_SAMPLERS = ["Euler a", "DPM2 a", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 3M SDE", "LCM"]
# Pairs of schedule types that are the same schedule (in A1111 too, or through the same diffusers setting).
SAME_SCHEDULE = [{"uniform", "normal"}, {"sgm_uniform", "simple"}, {"exponential", "polyexponential"}]


def sd1_sigma_table() -> np.ndarray:
    """sigma(t) for t = 0..999 of SD's scaled-linear beta schedule."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    alphas_cumprod = np.cumprod(1.0 - betas)
    return np.sqrt((1 - alphas_cumprod) / alphas_cumprod)


SIGMAS = sd1_sigma_table()


def alpha_bar(timestep: float) -> float:
    """ᾱ at a possibly fractional timestep, interpolating log-sigma as k-diffusion and diffusers' Karras code do."""
    low = min(math.floor(timestep), len(SIGMAS) - 1)
    high = min(low + 1, len(SIGMAS) - 1)
    weight = timestep - low
    log_sigma = (1 - weight) * math.log(SIGMAS[low]) + weight * math.log(SIGMAS[high])
    return 1.0 / (1.0 + math.exp(2 * log_sigma))


def gaussian_denoiser(prediction_type: str):
    """The exact model for data N(MU, STD²): returns ε (or v) given the scheduler's model input x_t and timestep."""

    def model(x_t: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        a = alpha_bar(float(timestep))
        variance = a * STD**2 + (1 - a)  # Var(x_t)
        centred = x_t - math.sqrt(a) * MU
        eps = math.sqrt(1 - a) * centred / variance  # E[ε | x_t]
        if prediction_type == "epsilon":
            return eps
        x0 = MU + math.sqrt(a) * STD**2 * centred / variance  # E[x0 | x_t]
        return math.sqrt(a) * eps - math.sqrt(1 - a) * x0  # v = sqrt(ᾱ) ε - sqrt(1-ᾱ) x0

    return model


def start_latents(seeds: list[int]) -> tuple[torch.Tensor, list[torch.Generator]]:
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    latents = torch.cat([torch.randn((1, *LATENT_SHAPE), generator=g) for g in generators])
    return latents, generators


def sample(
    sampler: Sampler,
    seeds: list[int],
    prediction_type: str = "epsilon",
    start: torch.Tensor | None = None,
) -> torch.Tensor:
    """A txt2img loop as the processing code runs it, with the exact denoiser as the model."""
    scheduler = sampler.scheduler
    scheduler.set_timesteps(STEPS)
    latents, generators = start_latents(seeds)
    if start is not None:
        latents = start.clone()
    x = latents * scheduler.init_noise_sigma
    model = gaussian_denoiser(prediction_type)
    for timestep in scheduler.timesteps:
        model_output = model(scheduler.scale_model_input(x, timestep), timestep)
        x = sampler.step(model_output, timestep, x, generators)
    return x


def run(name: str, schedule: str | None, seeds: list[int], config: dict | None = None, **options) -> torch.Tensor:
    config = config or SD1_SCHEDULER_CONFIG
    sampler = create_sampler(name, schedule, config, seeds=seeds, **options)
    return sample(sampler, seeds, config["prediction_type"])


def schedule_of(name: str, schedule: str | None) -> torch.Tensor:
    scheduler = create_sampler(name, schedule, SD1_SCHEDULER_CONFIG).scheduler
    scheduler.set_timesteps(STEPS)
    values = getattr(scheduler, "sigmas", None)
    return (values if values is not None else scheduler.timesteps).double()


# --- names -----------------------------------------------------------------------------------------------------------


def test_sampler_names_in_a1111_order():
    assert sampler_names() == [
        "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 3M SDE", "Euler a", "Euler", "LMS",
        "Heun", "DPM2", "DPM2 a", "DDIM", "PLMS", "UniPC", "LCM", "TCD",  # TCD: Forge's, after A1111's
    ]


def test_schedule_type_names_and_labels():
    assert [(s.name, s.label) for s in SCHEDULE_TYPES] == [
        ("automatic", "Automatic"), ("uniform", "Uniform"), ("karras", "Karras"), ("exponential", "Exponential"),
        ("polyexponential", "Polyexponential"), ("sgm_uniform", "SGM Uniform"), ("simple", "Simple"),
        ("normal", "Normal"), ("ddim", "DDIM"), ("beta", "Beta"),
    ]
    assert schedule_type_labels()[0] == "Automatic"


def test_api_options_and_aliases_match_a1111():
    by_name = {info.name: info for info in SAMPLERS}
    assert by_name["DPM++ 2M"].options == {"scheduler": "karras"}
    assert by_name["DPM++ SDE"].options == {"scheduler": "karras", "second_order": "True", "brownian_noise": "True"}
    assert by_name["DPM++ 2M SDE Heun"].options == {
        "scheduler": "exponential", "brownian_noise": "True", "solver_type": "heun",
    }
    assert by_name["Euler a"].options == {"uses_ensd": "True"}
    assert by_name["Euler"].options == {}
    assert by_name["Euler a"].aliases == ("k_euler_a", "k_euler_ancestral")
    assert by_name["DDIM"].aliases == ("ddim",)
    assert by_name["LCM"].aliases == ("k_lcm",)


@pytest.mark.parametrize(
    ("request_name", "schedule", "expected"),
    [
        ("DPM++ 2M", None, ("DPM++ 2M", "automatic")),
        ("dpm++ 2m", "karras", ("DPM++ 2M", "karras")),
        ("k_dpmpp_2m", "Exponential", ("DPM++ 2M", "exponential")),
        ("K_EULER_A", "", ("Euler a", "automatic")),
        ("  Euler   a ", "SGM Uniform", ("Euler a", "sgm_uniform")),
        ("Euler", "SGMUniform", ("Euler", "sgm_uniform")),
        ("DPM++ 2M Karras", None, ("DPM++ 2M", "karras")),
        ("dpm++ 2m karras", "Automatic", ("DPM++ 2M", "karras")),
        ("DPM++ 2M SDE Exponential", None, ("DPM++ 2M SDE", "exponential")),
        ("DPM++ 2M SDE Heun", None, ("DPM++ 2M SDE Heun", "automatic")),
        ("DPM++ 2M SDE Heun Karras", None, ("DPM++ 2M SDE Heun", "karras")),
        ("Euler a SGM Uniform", None, ("Euler a", "sgm_uniform")),
        ("Euler sgm_uniform", None, ("Euler", "sgm_uniform")),
        ("DPM2 a Karras", None, ("DPM2 a", "karras")),
        # As in A1111's API, the schedule in the name wins.
        ("DPM++ 2M Karras", "Exponential", ("DPM++ 2M", "karras")),
        ("DDIM", "DDIM", ("DDIM", "ddim")),
    ],
)
def test_resolve(request_name, schedule, expected):
    info, schedule_type = resolve(request_name, schedule)
    assert (info.name, schedule_type.name) == expected


def test_unknown_sampler_lists_the_valid_names():
    with pytest.raises(ValueError) as error:
        resolve("DPM fast")
    assert str(error.value) == (
        "Unknown sampler 'DPM fast'. Valid samplers: DPM++ 2M, DPM++ SDE, DPM++ 2M SDE, DPM++ 2M SDE Heun, "
        "DPM++ 3M SDE, Euler a, Euler, LMS, Heun, DPM2, DPM2 a, DDIM, PLMS, UniPC, LCM, TCD"
    )
    with pytest.raises(ValueError, match=r"^Unknown sampler 'Euler Turbo'\. Valid samplers: DPM\+\+ 2M, "):
        resolve("Euler Turbo")


def test_unknown_schedule_type_lists_the_labels():
    with pytest.raises(ValueError) as error:
        resolve("Euler", "KL Optimal")
    assert str(error.value) == (
        "Unknown schedule type 'KL Optimal'. Valid schedule types: Automatic, Uniform, Karras, Exponential, "
        "Polyexponential, SGM Uniform, Simple, Normal, DDIM, Beta"
    )


def test_a_schedule_the_sampler_cannot_do_names_the_ones_it_can():
    with pytest.raises(ValueError) as error:
        resolve("DDIM", "Karras")
    assert str(error.value) == (
        "Sampler 'DDIM' does not support schedule type 'Karras'. "
        "Schedule types DDIM supports: Automatic, Uniform, SGM Uniform, Simple, Normal, DDIM"
    )
    with pytest.raises(ValueError, match=r"^Sampler 'Euler a' does not support schedule type 'Karras'\."):
        resolve("Euler a Karras")
    with pytest.raises(ValueError, match=r"Schedule types LCM supports: Automatic$"):
        create_sampler("LCM", "Uniform", SD1_SCHEDULER_CONFIG)


def test_declared_schedules_use_only_constructor_arguments_the_class_has():
    for info in SAMPLERS:
        accepted = set(inspect.signature(info.scheduler_class.__init__).parameters)
        assert info.schedules[0] == "automatic"
        for schedule in SCHEDULE_TYPES:
            if schedule.name in info.schedules:
                assert set(schedule.config) <= accepted, (info.name, schedule.name)
    assert "karras" not in resolve("DDIM")[0].schedules  # DDIMScheduler has no use_karras_sigmas


# --- schedulers ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "schedule"), SAMPLER_SCHEDULE_PAIRS)
def test_every_sampler_and_schedule_builds_and_sets_timesteps(name, schedule):
    sampler = create_sampler(name, schedule, SD1_SCHEDULER_CONFIG)
    scheduler = sampler.scheduler
    assert isinstance(scheduler, sampler.info.scheduler_class)
    scheduler.set_timesteps(STEPS)
    timesteps = scheduler.timesteps.double()
    assert len(timesteps) >= STEPS
    assert torch.isfinite(timesteps).all()
    assert (timesteps >= 0).all() and (timesteps <= 999).all()
    sigmas = getattr(scheduler, "sigmas", None)
    if sigmas is not None:
        assert torch.isfinite(sigmas).all()
        assert float(sigmas[0]) > 1.0 and float(sigmas[-1]) < 0.05


@pytest.mark.parametrize("name", [info.name for info in SAMPLERS if len(info.schedules) > 1])
def test_schedule_types_give_different_schedules(name):
    info = resolve(name)[0]
    explicit = [schedule for schedule in info.schedules if schedule != "automatic"]
    schedules = {schedule: schedule_of(name, schedule) for schedule in explicit}
    for i, first in enumerate(explicit):
        for second in explicit[i + 1:]:
            same = any({first, second} == pair for pair in SAME_SCHEDULE)
            equal = schedules[first].shape == schedules[second].shape and torch.equal(
                schedules[first], schedules[second]
            )
            assert equal == same, (name, first, second)


@pytest.mark.parametrize(
    ("name", "expected_default"),
    [("DPM++ 2M", "karras"), ("DPM++ SDE", "karras"), ("DPM++ 2M SDE", "exponential"),
     ("DPM++ 3M SDE", "exponential"), ("DPM2", "karras"), ("DPM2 a", "karras"), ("Euler", "uniform"),
     ("Euler a", "uniform"), ("LMS", "uniform"), ("Heun", "uniform")],
)
def test_automatic_is_the_samplers_a1111_default(name, expected_default):
    sampler = create_sampler(name, "Automatic", SD1_SCHEDULER_CONFIG)
    assert sampler.schedule.name == expected_default
    assert torch.equal(schedule_of(name, None), schedule_of(name, expected_default))


def test_karras_exponential_and_uniform_sigmas_are_k_diffusions():
    """SD1's sigma range 0.0292..14.6146 and k-diffusion's formulas, as A1111 computes them."""
    sigma_min, sigma_max = SIGMAS[0], SIGMAS[-1]
    ramp = np.linspace(0, 1, STEPS)
    rho = 7.0
    karras = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    exponential = np.exp(np.linspace(math.log(sigma_max), math.log(sigma_min), STEPS))
    uniform = SIGMAS[np.linspace(999, 0, STEPS).astype(int)]  # 999, 888, ..., 0: whole timesteps for 10 steps
    for name in ("Euler", "LMS", "DPM++ 2M"):
        np.testing.assert_allclose(schedule_of(name, "Karras")[:-1].numpy(), karras, rtol=1e-4)
        np.testing.assert_allclose(schedule_of(name, "Exponential")[:-1].numpy(), exponential, rtol=1e-4)
        assert float(schedule_of(name, "Karras")[-1]) == 0.0
    np.testing.assert_allclose(schedule_of("Euler", "Uniform")[:-1].numpy(), uniform, rtol=1e-4)


@pytest.mark.parametrize("name", sampler_names())
def test_the_models_prediction_type_is_kept(name):
    assert create_sampler(name, None, SD2_V_CONFIG).scheduler.config.prediction_type == "v_prediction"


def test_the_models_solver_settings_do_not_leak_into_another_sampler():
    shipped = {
        **SD1_SCHEDULER_CONFIG, "_class_name": "DPMSolverMultistepScheduler", "use_karras_sigmas": True,
        "algorithm_type": "sde-dpmsolver++", "solver_order": 3, "timestep_spacing": "trailing",
    }
    euler = create_sampler("Euler", None, shipped).scheduler
    assert euler.config.use_karras_sigmas is False
    assert euler.config.timestep_spacing == "linspace"
    dpmpp = create_sampler("DPM++ 2M", "Uniform", shipped).scheduler
    assert (dpmpp.config.algorithm_type, dpmpp.config.solver_order) == ("dpmsolver++", 2)
    assert dpmpp.config.use_karras_sigmas is False
    # Model settings pass through; keys a class does not take are dropped.
    ddim = create_sampler("DDIM", None, {**shipped, "rescale_betas_zero_snr": True}).scheduler
    assert ddim.config.rescale_betas_zero_snr is True
    assert "use_karras_sigmas" not in ddim.config


def test_sampler_configs():
    assert create_sampler("DPM++ 2M SDE Heun", None, SD1_SCHEDULER_CONFIG).scheduler.config.solver_type == "heun"
    assert create_sampler("DPM++ 3M SDE", None, SD1_SCHEDULER_CONFIG).scheduler.config.solver_order == 3
    plms = create_sampler("PLMS", None, SD1_SCHEDULER_CONFIG).scheduler.config
    assert plms.skip_prk_steps is True and plms.timestep_spacing == "leading" and plms.steps_offset == 1
    sde = create_sampler("DPM++ SDE", None, SD1_SCHEDULER_CONFIG, seeds=[11, 12]).scheduler
    assert sde.config.noise_sampler_seed == [11, 12]


def test_step_arguments():
    def kwargs(name: str, **options) -> dict:
        return create_sampler(name, None, SD1_SCHEDULER_CONFIG, **options).step_kwargs

    assert kwargs("DDIM") == {"eta": 0.0}
    assert kwargs("DDIM", eta=0.5) == {"eta": 0.5}
    assert kwargs("Euler", s_churn=1.0, s_tmin=0.1, s_tmax=10.0, s_noise=1.003) == {
        "s_churn": 1.0, "s_tmin": 0.1, "s_tmax": 10.0, "s_noise": 1.003,
    }
    assert kwargs("DPM++ SDE", s_noise=0.9) == {"s_noise": 0.9}
    assert kwargs("LMS", eta=0.5, s_churn=1.0) == {}
    assert create_sampler("Euler a", None, SD1_SCHEDULER_CONFIG).eta == 1.0
    assert create_sampler("Euler", None, SD1_SCHEDULER_CONFIG).eta is None


@pytest.mark.parametrize(
    ("name", "schedule", "expected"),
    [
        ("DPM++ 2M", None, "Karras"),
        ("DPM++ 2M", "Automatic", "Karras"),
        ("DPM++ 2M", "Exponential", "Exponential"),
        ("DPM++ 2M SDE", "", "Exponential"),
        ("DPM++ 2M Karras", None, "Karras"),
        ("Euler", None, None),
        ("Euler", "Automatic", "Automatic"),
        ("Euler", "Uniform", "Uniform"),
        ("Euler a", "sgm_uniform", "SGM Uniform"),
        ("DDIM", None, None),
        ("UniPC", "Automatic", "Automatic"),
    ],
)
def test_infotext_schedule_type(name, schedule, expected):
    assert create_sampler(name, schedule, SD1_SCHEDULER_CONFIG).infotext_schedule == expected


# --- sampling --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def results_by_sampler() -> dict[tuple[str, str], torch.Tensor]:
    return {
        (info.name, prediction): run(info.name, None, [100, 101], config)
        for info in SAMPLERS
        for prediction, config in (("epsilon", SD1_SCHEDULER_CONFIG), ("v_prediction", SD2_V_CONFIG))
    }


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("name", sampler_names())
def test_sampling_lands_on_the_data_distribution(results_by_sampler, name, prediction):
    result = results_by_sampler[(name, prediction)]
    assert result.shape == (2, *LATENT_SHAPE)
    assert torch.isfinite(result).all()
    # Mean within 3.5 standard errors-ish; a wrong prediction type or sigma scale lands near 0.2 or below.
    assert abs(float(result.mean()) - MU) < 0.06
    # 10 steps of a first-order or consistency sampler under-disperse; none may collapse or blow up.
    assert 0.25 < float(result.std()) < 0.7


@pytest.mark.parametrize("name", ["DPM++ 2M", "Heun", "DPM2"])
def test_high_order_samplers_recover_the_data_spread(results_by_sampler, name):
    for prediction in ("epsilon", "v_prediction"):
        assert abs(float(results_by_sampler[(name, prediction)].std()) - STD) < 0.05


def test_eps_and_v_models_give_the_same_images(results_by_sampler):
    for name in ("DPM++ 2M", "Euler", "DDIM", "UniPC"):
        torch.testing.assert_close(
            results_by_sampler[(name, "epsilon")], results_by_sampler[(name, "v_prediction")], atol=1e-3, rtol=0
        )


def test_samplers_give_different_images(results_by_sampler):
    names = sampler_names()
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            difference = (results_by_sampler[(first, "epsilon")] - results_by_sampler[(second, "epsilon")]).abs()
            assert float(difference.max()) > 1e-3, (first, second)


@pytest.mark.parametrize("name", STOCHASTIC_SAMPLERS)
def test_a_batch_gives_the_same_images_as_single_runs(name):
    seed = 1234
    batch = run(name, None, [seed, seed + 1])
    singles = torch.cat([run(name, None, [seed]), run(name, None, [seed + 1])])
    assert torch.equal(batch, singles)


@pytest.mark.parametrize("name", STOCHASTIC_SAMPLERS)
def test_stochastic_samplers_draw_their_noise_from_the_images_seed(name):
    start, _ = start_latents([7])
    first = sample(create_sampler(name, None, SD1_SCHEDULER_CONFIG, seeds=[1]), [1], start=start)
    again = sample(create_sampler(name, None, SD1_SCHEDULER_CONFIG, seeds=[1]), [1], start=start)
    other = sample(create_sampler(name, None, SD1_SCHEDULER_CONFIG, seeds=[2]), [2], start=start)
    assert torch.equal(first, again)
    assert float((first - other).abs().max()) > 1e-3


@pytest.mark.parametrize(("name", "options"), [("DDIM", {"eta": 1.0}), ("Euler", {"s_churn": 2.0})])
def test_eta_and_churn_add_per_image_noise(name, options):
    deterministic = run(name, None, [5, 6])
    noisy = run(name, None, [5, 6], **options)
    assert float((deterministic - noisy).abs().max()) > 1e-3
    assert torch.equal(noisy, torch.cat([run(name, None, [5], **options), run(name, None, [6], **options)]))


def test_step_helper_works_where_scheduler_step_refuses_generators():
    sampler = create_sampler("LMS", None, SD1_SCHEDULER_CONFIG)
    sampler.scheduler.set_timesteps(STEPS)
    timestep = sampler.scheduler.timesteps[0]
    x = sampler.scheduler.scale_model_input(torch.ones((1, *LATENT_SHAPE)), timestep)
    with pytest.raises(TypeError):
        sampler.scheduler.step(torch.zeros_like(x), timestep, x, generator=[torch.Generator()])
    assert torch.isfinite(sampler.step(torch.zeros_like(x), timestep, x, [torch.Generator()])).all()


def test_step_returns_float32_for_half_inputs():
    sampler = create_sampler("Euler a", None, SD1_SCHEDULER_CONFIG)
    sampler.scheduler.set_timesteps(STEPS)
    x = torch.ones((1, *LATENT_SHAPE), dtype=torch.float16)
    timestep = sampler.scheduler.timesteps[0]
    result = sampler.step(torch.zeros_like(x), timestep, x, [torch.Generator().manual_seed(1)])
    assert result.dtype == torch.float32
