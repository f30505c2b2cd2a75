//! The training report as the command line prints it.

use std::fmt;

use super::{DEPTH_FOLDS, TrainReport};
use crate::jobs::eval::metrics::OpenSet;

/// The open-set MAP@5, or `-` when no individuals were held out as new.
fn open_set_map5(open_set: Option<&OpenSet>) -> String {
    open_set.map_or("-".to_string(), |o| format!("{:.3}", o.map5))
}

fn blocks_name(depths: &[usize]) -> String {
    match depths {
        [one] => format!("block {one}"),
        many => format!("blocks {}", super::depths_name(many)),
    }
}

impl fmt::Display for TrainReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self;
        write!(
            f,
            "best epoch {} of {}, on individuals never trained on:\n  \
             trained model:     MAP@5 {:.3}, R@1 {:.3}, open-set MAP@5 {}\n  \
             before training:   MAP@5 {:.3}, open-set MAP@5 {}\n  \
             frozen CLS token:  MAP@5 {:.3}, open-set MAP@5 {}",
            r.best_epoch,
            r.epochs_run,
            r.best.closed_set.map5,
            r.best.closed_set.top1,
            open_set_map5(r.best.open_set.as_ref()),
            r.before.closed_set.map5,
            open_set_map5(r.before.open_set.as_ref()),
            r.baselines.frozen_cls.closed_set.map5,
            open_set_map5(r.baselines.frozen_cls.open_set.as_ref()),
        )?;
        if let Some(lda) = &r.baselines.lda {
            write!(
                f,
                "\n  LDA of CLS ({}-d): MAP@5 {:.3}, open-set MAP@5 {}",
                r.baselines.lda_dim,
                lda.closed_set.map5,
                open_set_map5(lda.open_set.as_ref())
            )?;
        }
        write!(f, "\n{} training on the tokens of {}", r.mode, blocks_name(&r.blocks))?;
        if !r.depth_scores.is_empty() {
            let depths: Vec<String> =
                r.depth_scores.iter().map(|(d, m)| format!("{}: {m:.3}", blocks_name(d))).collect();
            write!(f, " (chosen by LDA MAP@5 over {DEPTH_FOLDS} folds of individuals: {})", depths.join(", "))?;
        }
        if let Some(refit) = &r.refit {
            write!(
                f,
                "\nthe model written was then trained on all {} individuals ({} crops) for {} epoch(s); \
                 the figures above are the validated run's",
                refit.individuals, refit.crops, refit.epochs
            )?;
        }
        write!(
            f,
            "\nwrote {} and {}\nuse it with --neck {} or `whaleid models activate`",
            r.checkpoint.display(),
            r.card.display(),
            r.checkpoint.display()
        )
    }
}
