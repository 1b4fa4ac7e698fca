//! Optimizers and schedules agree with PyTorch's `torch.optim` (f64, to 1e-6).
//!
//! The reference numbers below come from this script (PyTorch 2.15, CPU); rerun it to
//! regenerate them:
//!
//! import math, torch
//! torch.set_default_dtype(torch.float64)
//! N, STEPS = 6, 7
//! def grad(t):
//!     return torch.tensor([math.sin(1.3 * i + 0.7 * t) * (1 + 0.1 * t) for i in range(N)])
//! p0 = [0.5 - 0.3 * i for i in range(N)]
//! configs = {
//!     "sgd": lambda p: torch.optim.SGD([p], lr=0.1),
//!     "sgd_momentum": lambda p: torch.optim.SGD([p], lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01),
//!     "sgd_nesterov": lambda p: torch.optim.SGD([p], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
//!     "rmsprop": lambda p: torch.optim.RMSprop([p], lr=0.01),
//!     "rmsprop_full": lambda p: torch.optim.RMSprop([p], lr=0.01, alpha=0.9, momentum=0.9, centered=True, weight_decay=0.01),
//!     "adam": lambda p: torch.optim.Adam([p], lr=0.01),
//!     "adam_full": lambda p: torch.optim.Adam([p], lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01),
//!     "adamw": lambda p: torch.optim.AdamW([p], lr=0.01, weight_decay=0.1),
//!     "adagrad": lambda p: torch.optim.Adagrad([p], lr=0.1),
//!     "adagrad_full": lambda p: torch.optim.Adagrad([p], lr=0.1, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1),
//! }
//! for name, make in configs.items():
//!     p = torch.tensor(p0, requires_grad=True)
//!     opt = make(p)
//!     for t in range(STEPS):
//!         p.grad = grad(t)
//!         opt.step()
//!     print(f'("{name}", [{", ".join(repr(v) for v in p.detach().tolist())}]),')
//! def lrs(make, metrics=None):
//!     p = torch.tensor(p0, requires_grad=True)
//!     opt = torch.optim.SGD([p], lr=0.1)
//!     s = make(opt)
//!     out = [opt.param_groups[0]["lr"]]
//!     for e in range(8):
//!         opt.step()
//!         if metrics: s.step(metrics[e])
//!         else: s.step()
//!         out.append(opt.param_groups[0]["lr"])
//!     return out
//! M = [1.0, 0.9, 0.95, 0.97, 0.96, 0.5, 0.6, 0.7]
//! sched = {
//!     "step": lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5),
//!     "exponential": lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.9),
//!     "cosine": lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=5, eta_min=0.01),
//!     "linear": lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=0.25, total_iters=4),
//! }
//! for name, make in sched.items():
//!     print(f'("{name}", [{", ".join(repr(v) for v in lrs(make))}]),')
//! print(f'("plateau", [{", ".join(repr(v) for v in lrs(lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, factor=0.5, patience=1, cooldown=1), M))}]),')

use crank::optim::{
    Adagrad, AdagradConfig, Adam, AdamConfig, Optimizer, RmsProp, RmsPropConfig, Schedule,
    Scheduler, Sgd, SgdConfig,
};

const N: usize = 6;
const STEPS: usize = 7;

fn grad(t: usize) -> Vec<f64> {
    (0..N)
        .map(|i| (1.3 * i as f64 + 0.7 * t as f64).sin() * (1.0 + 0.1 * t as f64))
        .collect()
}

const OPTIMIZERS: &[(&str, [f64; N])] = &[
    (
        "sgd",
        [
            0.34383613585867545,
            0.36242616110854053,
            0.1430614798103708,
            -0.4323888388424746,
            -0.9603894327121161,
            -1.106918897630949,
        ],
    ),
    (
        "sgd_momentum",
        [
            -0.48728014616605053,
            -0.17231912415635497,
            0.681885594407903,
            0.39372843169417787,
            -1.0448333577885913,
            -1.9564970462034257,
        ],
    ),
    (
        "sgd_nesterov",
        [
            -0.640559506584844,
            0.04458266473049171,
            0.9493397501547531,
            0.32084756634323264,
            -1.3475442985973678,
            -2.0390307874804057,
        ],
    ),
    (
        "rmsprop",
        [
            0.31246029964522937,
            0.18111910306637993,
            0.027029588789643066,
            -0.28361576722279314,
            -0.7803182024899221,
            -1.2368906893026324,
        ],
    ),
    (
        "rmsprop_full",
        [
            -0.02482100649265344,
            -0.008195289500318908,
            0.038560538606025166,
            -0.052699166209027384,
            -0.684055526758402,
            -1.480438494227245,
        ],
    ),
    (
        "adam",
        [
            0.4593735612292661,
            0.1700427696006556,
            -0.08476665819737067,
            -0.35710337510752277,
            -0.6942916185388576,
            -1.0504940232281388,
        ],
    ),
    (
        "adam_full",
        [
            0.45000866145395996,
            0.1764047896767908,
            -0.08146232803273121,
            -0.36204325306237645,
            -0.6998015618392638,
            -1.047860983072004,
        ],
    ),
    (
        "adamw",
        [
            0.456005286270661,
            0.16881277158439542,
            -0.08404659027170959,
            -0.3545000682724086,
            -0.689508663911097,
            -1.0433244037072371,
        ],
    ),
    (
        "adagrad",
        [
            0.3120220302117671,
            0.1795842893390382,
            0.0264818458695934,
            -0.2825053783709293,
            -0.7789390463080348,
            -1.2375226791940828,
        ],
    ),
    (
        "adagrad_full",
        [
            0.3220454646008547,
            0.178043527870365,
            0.02711324575959311,
            -0.28897513622601184,
            -0.7734545972404935,
            -1.1838328071056616,
        ],
    ),
];

const SCHEDULES: &[(&str, [f64; 9])] = &[
    (
        "step",
        [0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.0125, 0.0125, 0.00625],
    ),
    (
        "exponential",
        [
            0.1,
            0.09000000000000001,
            0.08100000000000002,
            0.07290000000000002,
            0.06561000000000002,
            0.05904900000000002,
            0.05314410000000002,
            0.04782969000000002,
            0.043046721000000024,
        ],
    ),
    (
        "cosine",
        [
            0.1,
            0.09140576474687263,
            0.06890576474687263,
            0.04109423525312736,
            0.018594235253127367,
            0.01,
            0.018594235253127367,
            0.04109423525312739,
            0.06890576474687267,
        ],
    ),
    (
        "linear",
        [
            0.025,
            0.043750000000000004,
            0.06250000000000001,
            0.08125000000000002,
            0.10000000000000002,
            0.10000000000000002,
            0.10000000000000002,
            0.10000000000000002,
            0.10000000000000002,
        ],
    ),
    (
        "plateau",
        [0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05, 0.025],
    ),
];

fn make(name: &str) -> Box<dyn Optimizer> {
    let sgd = |momentum, dampening, nesterov| SgdConfig {
        lr: 0.1,
        momentum,
        dampening,
        nesterov,
        weight_decay: 0.01,
    };
    match name {
        "sgd" => Box::new(Sgd::new(0.1).unwrap()),
        "sgd_momentum" => Box::new(sgd(0.9, 0.1, false).build().unwrap()),
        "sgd_nesterov" => Box::new(sgd(0.9, 0.0, true).build().unwrap()),
        "rmsprop" => Box::new(RmsProp::new(0.01).unwrap()),
        "rmsprop_full" => Box::new(
            RmsPropConfig {
                lr: 0.01,
                alpha: 0.9,
                momentum: 0.9,
                centered: true,
                weight_decay: 0.01,
                ..Default::default()
            }
            .build()
            .unwrap(),
        ),
        "adam" => Box::new(Adam::new(0.01).unwrap()),
        "adam_full" => Box::new(
            AdamConfig {
                lr: 0.01,
                betas: [0.8, 0.99],
                eps: 1e-6,
                weight_decay: 0.01,
            }
            .build()
            .unwrap(),
        ),
        "adamw" => Box::new(Adam::adamw(0.01, 0.1).unwrap()),
        "adagrad" => Box::new(Adagrad::new(0.1).unwrap()),
        "adagrad_full" => Box::new(
            AdagradConfig {
                lr: 0.1,
                lr_decay: 0.01,
                weight_decay: 0.01,
                initial_accumulator_value: 0.1,
                ..Default::default()
            }
            .build()
            .unwrap(),
        ),
        other => panic!("no optimizer {other}"),
    }
}

fn run(opt: &mut dyn Optimizer, p: &mut [f64], steps: std::ops::Range<usize>) {
    for t in steps {
        opt.begin_step();
        opt.update_f64(0, p, &grad(t)).unwrap();
    }
}

#[test]
fn optimizers_match_torch_optim() {
    for (name, want) in OPTIMIZERS {
        let mut p: Vec<f64> = (0..N).map(|i| 0.5 - 0.3 * i as f64).collect();
        run(make(name).as_mut(), &mut p, 0..STEPS);
        for (got, want) in p.iter().zip(want) {
            assert!((got - want).abs() < 1e-6, "{name}: {p:?} vs {want:?}");
        }
    }
}

#[test]
fn optimizer_state_round_trips_through_a_break() {
    for (name, want) in OPTIMIZERS {
        let mut p: Vec<f64> = (0..N).map(|i| 0.5 - 0.3 * i as f64).collect();
        let mut first = make(name);
        run(first.as_mut(), &mut p, 0..3);
        let json = serde_json::to_string(&first.state()).unwrap();
        let mut second = make(name);
        second
            .load_state(&serde_json::from_str(&json).unwrap())
            .unwrap();
        run(second.as_mut(), &mut p, 3..STEPS);
        for (got, want) in p.iter().zip(want) {
            assert!(
                (got - want).abs() < 1e-6,
                "{name} resumed: {p:?} vs {want:?}"
            );
        }
    }
}

#[test]
fn f32_updates_track_f64() {
    for (name, want) in OPTIMIZERS {
        let mut p: Vec<f32> = (0..N).map(|i| 0.5 - 0.3 * i as f32).collect();
        let mut opt = make(name);
        for t in 0..STEPS {
            opt.begin_step();
            let g: Vec<f32> = grad(t).iter().map(|&v| v as f32).collect();
            opt.update_f32(0, &mut p, &g).unwrap();
        }
        for (got, want) in p.iter().zip(want) {
            assert!((*got as f64 - want).abs() < 1e-4, "{name} f32: {p:?}");
        }
    }
}

#[test]
fn schedules_match_torch_lr_schedulers() {
    let metrics = [1.0, 0.9, 0.95, 0.97, 0.96, 0.5, 0.6, 0.7];
    for (name, want) in SCHEDULES {
        let schedule = match *name {
            "step" => Schedule::Step {
                step_size: 2,
                gamma: 0.5,
            },
            "exponential" => Schedule::Exponential { gamma: 0.9 },
            "cosine" => Schedule::Cosine {
                t_max: 5,
                eta_min: 0.01,
                warmup: 0,
            },
            "linear" => Schedule::LinearWarmup {
                epochs: 4,
                start_factor: 0.25,
            },
            "plateau" => Schedule::ReduceOnPlateau {
                factor: 0.5,
                patience: 1,
                threshold: 1e-4,
                cooldown: 1,
                min_lr: 0.0,
            },
            other => panic!("no schedule {other}"),
        };
        let mut s = Scheduler::new(schedule, 0.1).unwrap();
        let mut got = vec![s.lr()];
        for m in metrics {
            got.push(s.step(Some(m)).unwrap());
        }
        // PyTorch's cosine is periodic past T_max; crank's stays at eta_min (as Keras's).
        let compared = if *name == "cosine" { 6 } else { 9 };
        for (e, (g, w)) in got.iter().zip(want.iter()).take(compared).enumerate() {
            assert!(
                (g - w).abs() < 1e-12,
                "{name} epoch {e}: {got:?} vs {want:?}"
            );
        }
    }
    let mut s = Scheduler::new(
        Schedule::Cosine {
            t_max: 4,
            eta_min: 0.0,
            warmup: 2,
        },
        0.3,
    )
    .unwrap();
    let lrs: Vec<f64> = std::iter::once(s.lr())
        .chain((0..8).map(|_| s.step(None).unwrap()))
        .collect();
    assert!(
        (lrs[0] - 0.1).abs() < 1e-12
            && (lrs[1] - 0.2).abs() < 1e-12
            && (lrs[2] - 0.3).abs() < 1e-12,
        "{lrs:?}"
    );
    assert!(lrs[3] < lrs[2] && lrs[6] == 0.0 && lrs[8] == 0.0, "{lrs:?}");
}
