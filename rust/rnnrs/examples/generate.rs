//! Train a tiny character-level LSTM on a made-up verse, then generate from it — pure Rust.
//!
//! ```text
//! cargo run --release -p rnnrs --example generate
//! ```

use ndarray::Array2;
use rnnrs::{beam_search, sample, CellKind, LanguageModel, LanguageModelConfig, Optimizer, OptimizerConfig, SampleConfig};

const TEXT: &str = "the moon over the river, the wind in the pines;\n\
                    the river runs east, the moon goes west;\n\
                    the pines keep the wind, the wind keeps the night.\n";

fn main() -> rnnrs::Result<()> {
    // A character vocabulary (sorted, so the ids are reproducible).
    let mut chars: Vec<char> = TEXT.chars().collect();
    chars.sort_unstable();
    chars.dedup();
    let id = |c: char| chars.binary_search(&c).expect("a character of the text");
    let corpus: Vec<usize> = TEXT.chars().cycle().take(TEXT.chars().count() * 8).map(id).collect();
    let decode = |ids: &[usize]| ids.iter().map(|&i| chars[i]).collect::<String>();

    let config = LanguageModelConfig {
        vocab_size: chars.len(),
        embed_size: Some(16),
        hidden_size: 64,
        num_layers: 2,
        cell: CellKind::Lstm,
        dropout: 0.0,
    };
    let mut model = LanguageModel::<f32>::new(config, 0)?;
    let mut opt = Optimizer::new(OptimizerConfig::adam(1e-2))?;

    // Random windows: (T, B) inputs and the same windows shifted by one as targets.
    let (steps, t, b) = (300, 32, 16);
    let span = corpus.len() - t - 1;
    for step in 0..steps {
        let start = |j: usize| (step * 7919 + j * 104_729) % span;
        let x = Array2::from_shape_fn((t, b), |(i, j)| corpus[start(j) + i]);
        let y = Array2::from_shape_fn((t, b), |(i, j)| corpus[start(j) + i + 1]);
        let (stats, _) = model.train_step(x.view(), y.view(), None, Some(1.0), &mut opt)?;
        if step % 50 == 0 || step == steps - 1 {
            println!("step {step:>3}  loss {:.3}  perplexity {:.2}", stats.loss, stats.loss.exp());
        }
    }

    let prefix: Vec<usize> = "the moon".chars().map(id).collect();
    let greedy = sample(&model, &[&prefix], &[0], &SampleConfig::greedy(60))?;
    println!("\ngreedy:      {:?}", decode(&prefix) + &decode(&greedy[0].ids));

    // Three prefixes of different lengths, one seed each, generated as one batch.
    let prefixes: Vec<Vec<usize>> = ["the", "the river", "w"].iter().map(|p| p.chars().map(id).collect()).collect();
    let opts = SampleConfig::new(60).temperature(0.8).top_p(0.9).stop_tokens(vec![id('\n')]);
    for (p, s) in prefixes.iter().zip(sample(&model, &prefixes, &[1, 2, 3], &opts)?) {
        let total: f64 = s.logprobs.iter().sum();
        println!("sampled:     {:?}  (log p = {total:.2})", decode(p) + &decode(&s.ids));
    }

    let beam = beam_search(&model, &prefix, 4, 40)?;
    println!("beam (w=4):  {:?}  (log p = {:.2})", decode(&prefix) + &decode(&beam.ids), beam.total_logprob);
    Ok(())
}
