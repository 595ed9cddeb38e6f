//! `--json-schema`, `--grammar` and `--json-object` of `run` and `chat`: the output held to a
//! grammar by a constraint at the head of the sampler chain (see `ferrolm-grammar`).

use anyhow::{Context, Result, bail};
use ferrolm_grammar::{Grammar, GrammarCompiler};
use ferrolm_sampling::SamplerChain;
use ferrolm_tokenizer::Tokenizer;
use std::sync::Arc;

/// Options that constrain the output.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConstraintArgs {
    /// Hold the output to a JSON schema: a file, or the schema itself (text starting with
    /// `{`). The output is one JSON value valid under it.
    #[arg(long, value_name = "FILE|JSON", group = "constraint")]
    pub json_schema: Option<String>,
    /// Hold the output to a grammar file in llguidance's Lark syntax (rules `name: a | b`,
    /// regular expressions `/.../`, `%json {schema}`); GBNF's `::=` is not read.
    #[arg(long, value_name = "FILE", group = "constraint")]
    pub grammar: Option<std::path::PathBuf>,
    /// Hold the output to a JSON object (any). `--json` is the output format of `run`, hence
    /// the longer name.
    #[arg(long, group = "constraint")]
    pub json_object: bool,
}

impl ConstraintArgs {
    /// The grammar asked for, if any.
    pub fn grammar(&self) -> Result<Option<Grammar>> {
        if let Some(spec) = &self.json_schema {
            let text = if spec.trim_start().starts_with('{') {
                spec.clone()
            } else {
                std::fs::read_to_string(spec)
                    .with_context(|| format!("cannot read the JSON schema {spec}"))?
            };
            let schema: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("the JSON schema {spec} is not valid JSON"))?;
            return Ok(Some(Grammar::JsonSchema(schema)));
        }
        if let Some(path) = &self.grammar {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the grammar {}", path.display()))?;
            return Ok(Some(Grammar::Lark(text)));
        }
        Ok(self.json_object.then_some(Grammar::JsonObject))
    }
}

/// A grammar ready for the model's vocabulary: each [`Constrained::chain`] starts one
/// constrained generation.
#[derive(Debug)]
pub struct Constrained {
    compiler: GrammarCompiler,
    grammar: Grammar,
}

impl Constrained {
    /// The grammar `args` ask for, compiled once for `gguf`'s vocabulary (to report a bad
    /// grammar before anything runs); `None` when they ask for none.
    pub fn new(args: &ConstraintArgs, gguf: &ferrolm_gguf::Gguf<'_>) -> Result<Option<Self>> {
        let Some(grammar) = args.grammar()? else {
            return Ok(None);
        };
        let tokenizer = Arc::new(Tokenizer::from_gguf(gguf)?);
        let compiler = GrammarCompiler::new(tokenizer)?;
        compiler.compile(&grammar).context("invalid constraint")?;
        Ok(Some(Self { compiler, grammar }))
    }

    /// `base` with a fresh constraint at its head (so greedy `base` makes a chain that
    /// [`SamplerChain::is_masked_greedy`]).
    pub fn chain(&self, base: SamplerChain) -> Result<SamplerChain> {
        let constraint = self.compiler.compile(&self.grammar)?;
        Ok(base.with_head(constraint))
    }
}

/// An error for options that cannot go with a constraint.
pub fn refuse_with_speculation(constrained: bool, speculative: bool) -> Result<()> {
    if constrained && speculative {
        bail!("--spec cannot be combined with --json-schema, --grammar or --json-object");
    }
    Ok(())
}
