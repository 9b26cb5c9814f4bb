//! Exactness, proven by properties: two argument values share a key only when they are the
//! same value, and a hit returns exactly what the body returned, or the value was refused
//! when it was stored.
//!
//! Keys are checked with `__private::key_of`, the key builder generated code uses; values go
//! through `#[cached]` functions on the embedded backend. `Debug` is the oracle of "the same
//! value": it tells `-0.0` from `0.0` and writes every `NaN` as `NaN`, as the key format does,
//! and it names each enum variant. Hash collections are compared as sorted `Vec`s, since
//! their `Debug` order varies.
//!
//! Failures are not persisted to a regression file (`failure_persistence: None`): the message
//! of a failing property holds its minimal input.

use std::any::Any;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use cache_aside_runtime::__private::{Layout, key_of};
use cache_aside_runtime::{Cache, cached};
use proptest::collection::{btree_map, hash_map, hash_set, vec};
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, TestRunner};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::runtime::Runtime;

// ---------------------------------------------------------------------------------------
// Types under test: one of each serde kind, reused by the key and the value properties.
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Marker;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Name(String);

/// Fields left out when `None`: written with their names, so `min` cannot pass for `max`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Range {
    #[serde(skip_serializing_if = "Option::is_none")]
    min: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max: Option<u32>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
enum External {
    Unit,
    Other,
    Id(u8),
    Name(String),
    Pair(u8, String),
    Range { min: Option<u8>, max: u8 },
    Nested(Option<Option<u8>>),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Inner {
    x: u8,
    label: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "t")]
enum Internal {
    Unit,
    Point { x: u8, y: Option<u8> },
    Inner(Inner),
    Attrs(BTreeMap<String, u8>),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "t", content = "c")]
enum Adjacent {
    Unit,
    Id(u8),
    Name(String),
    Pair(u8, u8),
    Range { min: Option<u8>, max: u8 },
}

/// One variant per serde kind: the key format documents that two variants of one kind, or
/// an `Option`, would share keys in an untagged enum.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Untagged {
    Id(u64),
    Login(String),
    Flag(bool),
    Ratio(f64),
    List(Vec<u8>),
    Attrs(BTreeMap<String, u8>),
    Nothing,
}

/// Two variants of nearby kinds: JSON reads `5` back as the first that fits, so `Big(5)`
/// must be refused rather than come back as `Small(5)`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Num {
    Small(u8),
    Big(u16),
}

// ---------------------------------------------------------------------------------------
// Strategies. Small domains, so that near-collisions are likely, and a little of anything.
// ---------------------------------------------------------------------------------------

/// Every reserved character, and the characters of numbers, bools and the string mark.
const ALPHABET: &[char] = &[
    '%', ':', '*', '?', '[', ']', '{', '}', '\\', '(', ')', ',', '=', '~', '!', '#', '"', '\'',
    ' ', '0', '1', '9', '.', '-', '+', 'e', 'E', 't', 'r', 'u', 'f', 'a', 'l', 's', 'i', 'n', 'N',
    'I', 'y', 'x', 'é', '\n', '\0', '\u{7f}',
];

/// Strings that read as another kind, or as another string's escaped form.
const TRICKY: &[&str] = &[
    "", "'", "''", "%", "%27", "'42", "42", "-7", "+7", "1.5", ".5", "5.", "1e5", "1E5", "e5",
    "inf", "-inf", "+inf", "Inf", "INF", "infinity", "Infinity", "NaN", "nan", "-NaN", "true",
    "True", "false", "'true", "truth", "-", "+", ".", "~", "!~", "!!~", "()", "(,)", "(=)", "a:b",
    "a", "b", "a%3Ab", "a,b", "#", "x y", "é", "\0", "\n",
];

fn small_string() -> impl Strategy<Value = String> + Clone {
    vec(select(ALPHABET), 0..4).prop_map(|chars| chars.into_iter().collect())
}

/// Mostly short and tricky; sometimes any Unicode, sometimes just around the length where
/// the arguments part is hashed.
fn string() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        3 => select(TRICKY).prop_map(str::to_owned),
        4 => small_string(),
        1 => any::<String>(),
        1 => small_string().prop_map(|s| format!("{}{s}", "x".repeat(156))),
    ]
}

/// Strings spelled like another kind's key: `1`, `-2`, `true`, `NaN`, `1.0`, `()`, `~`.
fn lookalike() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        prop_oneof![-3i64..3, any::<i64>()].prop_map(|n| n.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        f64s(true).prop_map(|x| format!("{x:?}")),
        select(vec![
            "()", "~", "!~", "(,)", "(=)", "(1,2)", "(a=1)", "Unit", "Id(1)"
        ])
        .prop_map(str::to_owned),
    ]
}

fn chars() -> impl Strategy<Value = char> {
    prop_oneof![select(ALPHABET), any::<char>()]
}

fn finite_f64() -> impl Strategy<Value = f64> + Clone {
    prop_oneof![
        select(vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.1,
            0.5,
            42.0,
            1e16,
            1e-7,
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
            5e-324,
            9_007_199_254_740_993.0,
        ]),
        any::<f64>().prop_filter("finite", |x| x.is_finite()),
    ]
}

/// With `nonfinite`, NaN (of both signs) and the infinities a quarter of the time.
fn f64s(nonfinite: bool) -> BoxedStrategy<f64> {
    if nonfinite {
        prop_oneof![
            3 => finite_f64(),
            1 => select(vec![f64::NAN, -f64::NAN, f64::INFINITY, f64::NEG_INFINITY]),
        ]
        .boxed()
    } else {
        finite_f64().boxed()
    }
}

fn f32s(nonfinite: bool) -> BoxedStrategy<f32> {
    let finite = prop_oneof![
        select(vec![
            0.0,
            -0.0,
            1.0,
            0.1,
            16_777_217.0,
            1e-45,
            f32::MAX,
            f32::MIN_POSITIVE
        ]),
        any::<f32>().prop_filter("finite", |x| x.is_finite()),
    ];
    if nonfinite {
        prop_oneof![
            3 => finite,
            1 => select(vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY]),
        ]
        .boxed()
    } else {
        finite.boxed()
    }
}

fn i128s() -> impl Strategy<Value = i128> {
    prop_oneof![-4i128..4, any::<i128>(), select(vec![i128::MIN, i128::MAX])]
}

fn u128s() -> impl Strategy<Value = u128> {
    prop_oneof![0u128..4, any::<u128>(), Just(u128::MAX)]
}

fn small_u8() -> impl Strategy<Value = u8> + Clone {
    prop_oneof![0u8..3, any::<u8>()]
}

/// `Some(None)` does not survive JSON; without `lossy`, none is generated.
fn patch(lossy: bool) -> BoxedStrategy<Option<Option<u8>>> {
    if lossy {
        option::of(option::of(small_u8())).boxed()
    } else {
        option::of(small_u8().prop_map(Some)).boxed()
    }
}

/// Keys `t` and `x` sometimes, to meet the internal tag and `Point`'s field.
fn attrs() -> impl Strategy<Value = BTreeMap<String, u8>> + Clone {
    let key = prop_oneof![
        select(vec!["t", "x", "y"]).prop_map(str::to_owned),
        small_string()
    ];
    btree_map(key, 0u8..3, 0..3)
}

fn external(lossy: bool) -> impl Strategy<Value = External> {
    prop_oneof![
        Just(External::Unit),
        Just(External::Other),
        small_u8().prop_map(External::Id),
        string().prop_map(External::Name),
        (small_u8(), string()).prop_map(|(n, s)| External::Pair(n, s)),
        (option::of(0u8..3), 0u8..3).prop_map(|(min, max)| External::Range { min, max }),
        patch(lossy).prop_map(External::Nested),
    ]
}

fn internal() -> impl Strategy<Value = Internal> {
    prop_oneof![
        Just(Internal::Unit),
        (0u8..3, option::of(0u8..3)).prop_map(|(x, y)| Internal::Point { x, y }),
        (0u8..3, string()).prop_map(|(x, label)| Internal::Inner(Inner { x, label })),
        attrs().prop_map(Internal::Attrs),
    ]
}

fn adjacent() -> impl Strategy<Value = Adjacent> {
    prop_oneof![
        Just(Adjacent::Unit),
        small_u8().prop_map(Adjacent::Id),
        string().prop_map(Adjacent::Name),
        (0u8..3, 0u8..3).prop_map(|(a, b)| Adjacent::Pair(a, b)),
        (option::of(0u8..3), 0u8..3).prop_map(|(min, max)| Adjacent::Range { min, max }),
    ]
}

fn untagged(nonfinite: bool) -> impl Strategy<Value = Untagged> {
    prop_oneof![
        prop_oneof![0u64..3, any::<u64>()].prop_map(Untagged::Id),
        prop_oneof![string(), lookalike()].prop_map(Untagged::Login),
        any::<bool>().prop_map(Untagged::Flag),
        f64s(nonfinite).prop_map(Untagged::Ratio),
        vec(0u8..3, 0..3).prop_map(Untagged::List),
        attrs().prop_map(Untagged::Attrs),
        Just(Untagged::Nothing),
    ]
}

/// Without `lossy`, no `Big` that JSON would read back as a `Small`.
fn num(lossy: bool) -> BoxedStrategy<Num> {
    let big = if lossy {
        prop_oneof![0u16..4, 250u16..260, any::<u16>()].boxed()
    } else {
        prop_oneof![256u16..260, 256u16..].boxed()
    };
    prop_oneof![
        prop_oneof![0u8..4, any::<u8>()].prop_map(Num::Small),
        big.prop_map(Num::Big),
    ]
    .boxed()
}

/// JSON trees: numbers of every representation (`1`, `-1`, `1.0`), no NaN (a `Value`
/// cannot hold one), a few levels deep.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop_oneof![0u64..3, any::<u64>()].prop_map(Value::from),
        prop_oneof![-3i64..0, any::<i64>()].prop_map(Value::from),
        finite_f64().prop_map(Value::from),
        prop_oneof![string(), lookalike()].prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 3, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..3).prop_map(Value::Array),
            btree_map(small_string(), inner, 0..3)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

// ---------------------------------------------------------------------------------------
// Keys.
// ---------------------------------------------------------------------------------------

const ARGS_START: &str = "ns:p:";

/// The key of a function with one key argument, `value`, checked for its characters.
fn key<T: Serialize + ?Sized>(value: &T) -> String {
    let key = key_of("ns", "p", Layout::new("{}"), |b| b.value(value))
        .expect("every generated value has a key");
    assert_well_formed(&key, 0);
    key
}

/// The key of a function with two key arguments, `x` and `y`.
fn key2<X: Serialize, Y: Serialize>(x: &X, y: &Y) -> String {
    let key = key_of("ns", "p", Layout::new("{}:{}"), |b| {
        b.value(x)?;
        b.lit(":");
        b.value(y)
    })
    .expect("every generated value has a key");
    assert_well_formed(&key, 1);
    key
}

/// No glob, hash-tag, space or control byte anywhere; the arguments part is either at most
/// 160 bytes with `colons` separators and no `#`, or `#` and 56 hex digits.
fn assert_well_formed(key: &str, colons: usize) {
    assert!(
        !key.bytes()
            .any(|b| b <= b' ' || b == 0x7f || b"*?[]{}".contains(&b)),
        "a key holds a reserved byte: {key:?}"
    );
    let args = key
        .strip_prefix(ARGS_START)
        .expect("namespace and prefix first");
    match args.strip_prefix('#') {
        Some(hashed) => assert!(
            hashed.len() == 56 && hashed.bytes().all(|b| b.is_ascii_hexdigit()),
            "a hashed key is `#` and 56 hex digits: {key:?}"
        ),
        None => {
            assert!(
                args.len() <= 160,
                "a long arguments part is not hashed: {key:?}"
            );
            assert!(!args.contains('#'), "{key:?}");
            assert_eq!(args.matches(':').count(), colons, "{key:?}");
        }
    }
}

/// For every two of `values` (each also against a clone of itself): equal keys exactly when
/// equal `Debug`.
fn keys_match_values<T: Serialize + Debug + Clone>(
    values: &[T],
    key: impl Fn(&T) -> String,
) -> Result<(), TestCaseError> {
    let seen: Vec<(String, String)> = values
        .iter()
        .map(|v| {
            let k = key(v);
            assert_eq!(k, key(&v.clone()), "one value, two keys: {v:?}");
            (format!("{v:?}"), k)
        })
        .collect();
    for (i, (value_a, key_a)) in seen.iter().enumerate() {
        for (value_b, key_b) in &seen[i + 1..] {
            prop_assert_eq!(
                value_a == value_b,
                key_a == key_b,
                "values {} and {} have keys {} and {}",
                value_a,
                value_b,
                key_a,
                key_b
            );
        }
    }
    Ok(())
}

fn key_config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Two to eight values of one strategy: up to 28 pairs per case.
fn several<S: Strategy>(strategy: S) -> impl Strategy<Value = Vec<S::Value>> {
    vec(strategy, 2..8)
}

proptest! {
    #![proptest_config(key_config())]

    #[test]
    fn two_i8s_share_a_key_only_when_equal(v in several(prop_oneof![-4i8..4, any::<i8>()])) {
        keys_match_values(&v, key)?;
    }

    #[test]
    fn two_u16s_share_a_key_only_when_equal(v in several(prop_oneof![0u16..4, any::<u16>()])) {
        keys_match_values(&v, key)?;
    }

    #[test]
    fn two_i32s_share_a_key_only_when_equal(v in several(prop_oneof![-4i32..4, any::<i32>()])) {
        keys_match_values(&v, key)?;
    }

    #[test]
    fn two_u64s_share_a_key_only_when_equal(v in several(prop_oneof![0u64..4, any::<u64>()])) {
        keys_match_values(&v, key)?;
    }

    #[test]
    fn two_i128s_share_a_key_only_when_equal(v in several(i128s())) {
        keys_match_values(&v, key)?;
    }

    #[test]
    fn two_u128s_share_a_key_only_when_equal(v in several(u128s())) {
        keys_match_values(&v, key)?;
    }

    #[test]
    fn two_f64s_share_a_key_only_when_their_debug_forms_match(v in several(f64s(true))) {
        keys_match_values(&v, key)?;
    }

    #[test]
    fn two_f32s_share_a_key_only_when_their_debug_forms_match(v in several(f32s(true))) {
        keys_match_values(&v, key)?;
    }

    #[test]
    fn two_strings_share_a_key_only_when_equal(v in several(string())) {
        keys_match_values(&v, key)?;
    }

    #[test]
    fn two_chars_share_a_key_only_when_equal(v in several(chars())) {
        keys_match_values(&v, key)?;
    }

    #[test]
    fn options_three_deep_share_a_key_only_when_equal(
        v in several(option::of(option::of(option::of(0u8..3))))
    ) {
        keys_match_values(&v, key)?;
    }

    #[test]
    fn tuples_share_a_key_only_when_equal(
        v in several((string(), 0u8..3, option::of(string()), (any::<bool>(), string())))
    ) {
        keys_match_values(&v, key)?;
    }

    #[test]
    fn a_skipped_field_cannot_make_the_other_take_its_place(
        v in several(
            (option::of(0u32..3), option::of(0u32..3)).prop_map(|(min, max)| Range { min, max })
        )
    ) {
        keys_match_values(&v, key)?;
    }

    #[test]
    fn unit_structs_share_a_key_only_when_their_containers_are_equal(
        v in several((vec(Just(Marker), 0..3), option::of(option::of(Just(Marker)))))
    ) {
        keys_match_values(&v, key)?;
    }

    #[test]
    fn newtype_structs_share_a_key_only_when_equal(v in several(string().prop_map(Name))) {
        keys_match_values(&v, key)?;
    }

    #[test]
    fn externally_tagged_variants_share_a_key_only_when_equal(v in several(external(true))) {
        keys_match_values(&v, key)?;
    }

    #[test]
    fn internally_tagged_variants_share_a_key_only_when_equal(v in several(internal())) {
        keys_match_values(&v, key)?;
    }

    #[test]
    fn adjacently_tagged_variants_share_a_key_only_when_equal(v in several(adjacent())) {
        keys_match_values(&v, key)?;
    }

    #[test]
    fn untagged_variants_of_distinct_kinds_share_a_key_only_when_equal(
        v in several(untagged(true))
    ) {
        keys_match_values(&v, key)?;
    }

    #[test]
    fn vecs_share_a_key_only_when_equal(v in several(vec(option::of(string()), 0..4))) {
        keys_match_values(&v, key)?;
    }

    #[test]
    fn nested_vecs_share_a_key_only_when_equal(v in several(vec(vec(string(), 0..3), 0..3))) {
        keys_match_values(&v, key)?;
    }

    #[test]
    fn btree_maps_share_a_key_only_when_equal(
        v in several(btree_map(string(), option::of(string()), 0..4))
    ) {
        keys_match_values(&v, key)?;
    }

    /// A `HashMap` iterates in another order in every instance: its key must not follow.
    #[test]
    fn a_hash_map_has_the_key_of_the_sorted_map_of_its_entries(
        entries in vec((string(), 0u8..3), 0..12)
    ) {
        let sorted: BTreeMap<String, u8> = entries.iter().cloned().collect();
        let forwards: HashMap<String, u8> = entries.iter().cloned().collect();
        let backwards: HashMap<String, u8> = entries.iter().rev().cloned().collect();
        let backwards_sorted: BTreeMap<String, u8> = entries.iter().rev().cloned().collect();
        prop_assert_eq!(key(&forwards), key(&sorted));
        prop_assert_eq!(key(&backwards), key(&backwards_sorted));
    }

    #[test]
    fn json_trees_share_a_key_only_when_equal(v in several(json())) {
        keys_match_values(&v, key)?;
    }

    #[test]
    fn two_string_arguments_share_a_key_only_when_both_are_equal(
        v in several((string(), string()))
    ) {
        keys_match_values(&v, |(x, y)| key2(x, y))?;
    }

    #[test]
    fn an_integer_and_a_string_argument_share_a_key_only_when_both_are_equal(
        v in several((0u8..3, string()))
    ) {
        keys_match_values(&v, |(x, y)| key2(x, y))?;
    }

    /// `("a:b", "c")` against `("a", "b:c")`, for any three strings.
    #[test]
    fn moving_a_colon_between_arguments_changes_the_key(
        a in string(), b in string(), c in string()
    ) {
        let left = key2(&format!("{a}:{b}"), &c);
        let right = key2(&a, &format!("{b}:{c}"));
        prop_assert_ne!(left, right);
    }

    /// `["a,b", "c"]` against `["a", "b,c"]`.
    #[test]
    fn moving_a_comma_between_elements_changes_the_key(
        a in string(), b in string(), c in string()
    ) {
        let left = key(&[format!("{a},{b}"), c.clone()]);
        let right = key(&[a.clone(), format!("{b},{c}")]);
        prop_assert_ne!(left, right);
    }

    /// `{"a=b": "c"}` against `{"a": "b=c"}`.
    #[test]
    fn moving_an_equals_sign_between_a_key_and_its_value_changes_the_key(
        a in string(), b in string(), c in string()
    ) {
        let left = key(&BTreeMap::from([(format!("{a}={b}"), c.clone())]));
        let right = key(&BTreeMap::from([(a.clone(), format!("{b}={c}"))]));
        prop_assert_ne!(left, right);
    }

    /// Letters that never need the string mark: the arguments part is the string itself.
    #[test]
    fn an_arguments_part_over_160_bytes_is_hashed(
        s in prop_oneof!["[a-e]{155,165}", "[a-e]{0,400}"]
    ) {
        let key = key(s.as_str());
        let written = if s.is_empty() { "'" } else { s.as_str() };
        if written.len() > 160 {
            prop_assert!(key.starts_with("ns:p:#"), "{}", key);
        } else {
            prop_assert_eq!(key, format!("{ARGS_START}{written}"));
        }
    }

    /// Each `:` is written `%3A`: it is the escaped length that counts.
    #[test]
    fn escaped_bytes_count_three_towards_the_hashing_length(n in 1usize..100) {
        let key = key(":".repeat(n).as_str());
        if 3 * n > 160 {
            prop_assert!(key.starts_with("ns:p:#"), "{}", key);
        } else {
            prop_assert_eq!(key, format!("{ARGS_START}{}", "%3A".repeat(n)));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Values through a real cache.
// ---------------------------------------------------------------------------------------

/// Everything JSON may or may not give back, in one value.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Shape {
    float: f64,
    single: f32,
    maybe_float: Option<f64>,
    floats: Vec<f64>,
    big: i128,
    huge: u128,
    text: String,
    letter: char,
    /// `Some(None)` must not come back as `None`.
    patch: Option<Option<u8>>,
    /// `Some(())` is written `null`, which reads back as `None`.
    maybe_unit: Option<()>,
    unit: (),
    marker: Marker,
    name: Name,
    pair: (u8, String, f64),
    by_name: BTreeMap<String, f64>,
    by_number: BTreeMap<i16, String>,
    set: HashSet<u32>,
    counts: HashMap<String, u32>,
    external: External,
    internal: Internal,
    adjacent: Adjacent,
    untagged: Untagged,
    number: Num,
    json: Value,
}

/// With `lossy`, values JSON cannot give back are likely; without, there are none.
fn shape(lossy: bool) -> impl Strategy<Value = Shape> {
    let scalars = (
        f64s(lossy),
        f32s(lossy),
        option::of(f64s(lossy)),
        vec(f64s(lossy), 0..3),
        i128s(),
        u128s(),
        string(),
        chars(),
    );
    let options = (
        patch(lossy),
        if lossy {
            option::of(Just(())).boxed()
        } else {
            Just(None).boxed()
        },
        string().prop_map(Name),
        (small_u8(), string(), f64s(lossy)),
    );
    let collections = (
        btree_map(string(), f64s(lossy), 0..3),
        btree_map(prop_oneof![-3i16..3, any::<i16>()], string(), 0..3),
        hash_set(prop_oneof![0u32..4, any::<u32>()], 0..5),
        hash_map(string(), any::<u32>(), 0..5),
    );
    let enums = (
        external(lossy),
        internal(),
        adjacent(),
        untagged(lossy),
        num(lossy),
        json(),
    );
    (scalars, options, collections, enums).prop_map(
        |(
            (float, single, maybe_float, floats, big, huge, text, letter),
            (patch, maybe_unit, name, pair),
            (by_name, by_number, set, counts),
            (external, internal, adjacent, untagged, number, json),
        )| Shape {
            float,
            single,
            maybe_float,
            floats,
            big,
            huge,
            text,
            letter,
            patch,
            maybe_unit,
            unit: (),
            marker: Marker,
            name,
            pair,
            by_name,
            by_number,
            set,
            counts,
            external,
            internal,
            adjacent,
            untagged,
            number,
            json,
        },
    )
}

/// A `Shape` JSON gives back: `-0.0`, `Some(Some(0))`, `Big(256)`, integers past `u64`.
fn clean_shape() -> Shape {
    Shape {
        float: -0.0,
        single: 0.1,
        maybe_float: Some(f64::MIN_POSITIVE),
        floats: vec![1e16, 5e-324],
        big: i128::MIN,
        huge: u128::MAX,
        text: "h\u{e9}llo \"w\\orld\"\n\u{0}".to_owned(),
        letter: '\u{1F600}',
        patch: Some(Some(0)),
        maybe_unit: None,
        unit: (),
        marker: Marker,
        name: Name(String::new()),
        pair: (7, "a:b".to_owned(), 42.0),
        by_name: [("x".to_owned(), -1.5)].into(),
        by_number: [(-3, "three".to_owned())].into(),
        set: (0..50).collect(),
        counts: (0..50).map(|i| (i.to_string(), i)).collect(),
        external: External::Range { min: None, max: 1 },
        internal: Internal::Inner(Inner {
            x: 1,
            label: "t".to_owned(),
        }),
        adjacent: Adjacent::Pair(1, 2),
        untagged: Untagged::Ratio(5.0),
        number: Num::Big(256),
        json: serde_json::json!({"a": [1, -1, 1.0, -0.0, null, {}], "b": "5"}),
    }
}

fn any_shape() -> impl Strategy<Value = Shape> {
    any::<bool>().prop_flat_map(shape)
}

/// Does `s` hold what `stats().unstorable` documents JSON cannot give back: NaN, an
/// infinity, `Some(None)`, `Some(())`, or an untagged `Big` that reads as a `Small`? Found
/// from the value itself, not by asking JSON.
fn must_refuse(s: &Shape) -> bool {
    let bad = |x: f64| !x.is_finite();
    bad(s.float)
        || !s.single.is_finite()
        || s.maybe_float.is_some_and(bad)
        || s.floats.iter().copied().any(bad)
        || bad(s.pair.2)
        || s.by_name.values().copied().any(bad)
        || s.patch == Some(None)
        || s.maybe_unit.is_some()
        || matches!(s.external, External::Nested(Some(None)))
        || matches!(s.untagged, Untagged::Ratio(x) if bad(x))
        || matches!(s.number, Num::Big(n) if n <= 255)
}

fn debug<T: Debug>(value: &T) -> String {
    format!("{value:?}")
}

fn sorted<T: Ord + Clone>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut items: Vec<T> = items.into_iter().collect();
    items.sort();
    items
}

/// `Debug`, with the hash collections sorted.
fn shape_view(s: &Shape) -> String {
    let rest = Shape {
        set: HashSet::new(),
        counts: HashMap::new(),
        ..s.clone()
    };
    let counts = sorted(s.counts.iter().map(|(k, v)| (k.clone(), *v)));
    format!(
        "{rest:?} set={:?} counts={counts:?}",
        sorted(s.set.iter().copied())
    )
}

type Sets = (HashSet<u32>, HashMap<String, u32>);

fn sets_view((set, map): &Sets) -> String {
    let map = sorted(map.iter().map(|(k, v)| (k.clone(), *v)));
    format!("{:?} {map:?}", sorted(set.iter().copied()))
}

/// Does JSON alone give `value` back, as `view` sees it? serde_json directly, so the
/// property does not check the library with its own code.
fn json_gives_back<T: Serialize + DeserializeOwned>(value: &T, view: fn(&T) -> String) -> bool {
    let Ok(text) = serde_json::to_string(value) else {
        return false;
    };
    serde_json::from_str::<T>(&text).is_ok_and(|back| view(&back) == view(value))
}

thread_local! {
    /// What the next body returns, and the `case` it is for.
    static NEXT: RefCell<Option<(u64, Box<dyn Any>)>> = const { RefCell::new(None) };
}

/// The body of every cached function below: the value the test set for this `case`.
fn next<T: Clone + 'static>(case: u64) -> T {
    NEXT.with_borrow(|next| {
        let (for_case, value) = next.as_ref().expect("the test sets the value first");
        assert_eq!(
            *for_case, case,
            "the body ran with another call's arguments"
        );
        value
            .downcast_ref::<T>()
            .expect("one type per function")
            .clone()
    })
}

// One cache per function, so that parallel tests do not move each other's counters.
static FLOATS: LazyLock<Cache> = LazyLock::new(Cache::memory);
static SINGLES: LazyLock<Cache> = LazyLock::new(Cache::memory);
static WIDE: LazyLock<Cache> = LazyLock::new(Cache::memory);
static TEXTS: LazyLock<Cache> = LazyLock::new(Cache::memory);
static NUMS: LazyLock<Cache> = LazyLock::new(Cache::memory);
static TREES: LazyLock<Cache> = LazyLock::new(Cache::memory);
static SETS: LazyLock<Cache> = LazyLock::new(Cache::memory);
static SHAPES: LazyLock<Cache> = LazyLock::new(Cache::memory);

#[cached(ttl = 60, cache = FLOATS)]
async fn float(case: u64) -> f64 {
    next(case)
}

#[cached(ttl = 60, cache = SINGLES)]
async fn single(case: u64) -> f32 {
    next(case)
}

#[cached(ttl = 60, cache = WIDE)]
async fn wide(case: u64) -> (i128, u128) {
    next(case)
}

#[cached(ttl = 60, cache = TEXTS)]
async fn text(case: u64) -> String {
    next(case)
}

#[cached(ttl = 60, cache = NUMS)]
async fn number(case: u64) -> Num {
    next(case)
}

#[cached(ttl = 60, cache = TREES)]
async fn json_tree(case: u64) -> Value {
    next(case)
}

#[cached(ttl = 60, cache = SETS)]
async fn sets(case: u64) -> Sets {
    next(case)
}

#[cached(ttl = 60, cache = SHAPES)]
async fn shaped(case: u64) -> Shape {
    next(case)
}

/// What became of a value the body returned.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// Stored: the second call was a hit.
    Hit,
    /// Counted in `unstorable`, not stored: the second call ran the body again.
    Refused,
}

/// One function returning one kind of value, its cache, and how values are compared.
struct Subject<T, F> {
    cache: &'static LazyLock<Cache>,
    call: F,
    view: fn(&T) -> String,
}

impl<T, F, Fut> Subject<T, F>
where
    T: Clone + Debug + Serialize + DeserializeOwned + 'static,
    F: Fn(u64) -> Fut,
    Fut: Future<Output = T>,
{
    /// Calls the function twice on a fresh key, its body returning `value`: the second call
    /// is a hit that gives `value` back exactly, or `value` was refused. Stored exactly when
    /// JSON gives it back, and never when `must_refuse`.
    async fn twice(&self, value: T, must_refuse: bool) -> Result<Outcome, TestCaseError> {
        static CASES: AtomicU64 = AtomicU64::new(0);
        let case = CASES.fetch_add(1, Relaxed);
        let expected = (self.view)(&value);
        NEXT.set(Some((case, Box::new(value.clone()))));
        let before = self.cache.stats();
        let first = (self.call)(case).await;
        let between = self.cache.stats();
        let second = (self.call)(case).await;
        let after = self.cache.stats();

        prop_assert_eq!(
            (self.view)(&first),
            expected.clone(),
            "a miss changed the value"
        );
        prop_assert_eq!(between.hits, before.hits, "a fresh key was a hit");
        let refused = between.unstorable - before.unstorable;
        let hits = after.hits - between.hits;
        prop_assert_eq!(refused + hits, 1, "neither stored nor refused: {:?}", after);
        prop_assert_eq!(
            (self.view)(&second),
            expected,
            "the second call gave back another value (hit: {})",
            hits == 1
        );
        if hits == 0 {
            prop_assert_eq!(
                after.unstorable - between.unstorable,
                1,
                "a refused value was stored on its next miss"
            );
        }
        prop_assert_eq!(
            hits == 1,
            json_gives_back(&value, self.view),
            "stored when JSON does not give the value back, or refused when it does"
        );
        if must_refuse {
            prop_assert_eq!(refused, 1, "a value JSON cannot hold was stored");
        }
        Ok(if hits == 1 {
            Outcome::Hit
        } else {
            Outcome::Refused
        })
    }

    /// A known value's outcome.
    fn known(&self, rt: &Runtime, value: T, outcome: Outcome) {
        let must_refuse = outcome == Outcome::Refused;
        match rt.block_on(self.twice(value.clone(), must_refuse)) {
            Ok(got) => assert_eq!(got, outcome, "{value:?}"),
            Err(error) => panic!("{error}: {value:?}"),
        }
    }

    /// The property, over 128 values of `strategy`.
    fn check<S>(&self, rt: &Runtime, strategy: S, must_refuse: fn(&T) -> bool)
    where
        S: Strategy<Value = T>,
    {
        let config = Config {
            failure_persistence: None,
            ..Config::with_cases(128)
        };
        let result = TestRunner::new(config).run(&strategy, |value| {
            let must_refuse = must_refuse(&value);
            rt.block_on(self.twice(value, must_refuse)).map(drop)
        });
        if let Err(error) = result {
            panic!("{error}");
        }
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime")
}

#[test]
fn a_float_comes_back_bit_for_bit_or_is_refused() {
    let rt = runtime();
    let floats = Subject {
        cache: &FLOATS,
        call: float,
        view: debug,
    };
    floats.known(&rt, -0.0, Outcome::Hit);
    floats.known(&rt, 0.1, Outcome::Hit);
    floats.known(&rt, f64::NAN, Outcome::Refused);
    floats.known(&rt, f64::NEG_INFINITY, Outcome::Refused);
    floats.check(&rt, f64s(true), |x| !x.is_finite());
}

#[test]
fn an_f32_comes_back_bit_for_bit_or_is_refused() {
    let rt = runtime();
    let singles = Subject {
        cache: &SINGLES,
        call: single,
        view: debug,
    };
    singles.known(&rt, 0.1, Outcome::Hit);
    singles.known(&rt, f32::INFINITY, Outcome::Refused);
    singles.check(&rt, f32s(true), |x| !x.is_finite());
}

#[test]
fn integers_of_128_bits_come_back_whole() {
    let rt = runtime();
    let wide = Subject {
        cache: &WIDE,
        call: wide,
        view: debug,
    };
    wide.known(&rt, (i128::MIN, u128::MAX), Outcome::Hit);
    wide.check(&rt, (i128s(), u128s()), |_| false);
}

#[test]
fn any_string_comes_back_unchanged() {
    let rt = runtime();
    let texts = Subject {
        cache: &TEXTS,
        call: text,
        view: debug,
    };
    texts.known(&rt, String::new(), Outcome::Hit);
    texts.check(&rt, prop_oneof![string(), any::<String>()], |_| false);
}

#[test]
fn an_untagged_variant_never_comes_back_as_its_neighbour() {
    let rt = runtime();
    let numbers = Subject {
        cache: &NUMS,
        call: number,
        view: debug,
    };
    numbers.known(&rt, Num::Big(5), Outcome::Refused);
    numbers.known(&rt, Num::Big(500), Outcome::Hit);
    numbers.known(&rt, Num::Small(5), Outcome::Hit);
    numbers.check(&rt, num(true), |n| matches!(n, Num::Big(n) if *n <= 255));
}

#[test]
fn a_json_tree_comes_back_unchanged() {
    let rt = runtime();
    let trees = Subject {
        cache: &TREES,
        call: json_tree,
        view: debug,
    };
    trees.known(
        &rt,
        serde_json::json!({"a": [1, -1, 1.0, -0.0, null]}),
        Outcome::Hit,
    );
    trees.check(&rt, json(), |_| false);
}

#[test]
fn hash_collections_come_back_with_the_same_elements() {
    let rt = runtime();
    let sets = Subject {
        cache: &SETS,
        call: sets,
        view: sets_view,
    };
    let many: Sets = (
        (0..200).collect(),
        (0..200).map(|i| (i.to_string(), i)).collect(),
    );
    sets.known(&rt, many, Outcome::Hit);
    let strategy = (
        hash_set(prop_oneof![0u32..4, any::<u32>()], 0..40),
        hash_map(string(), any::<u32>(), 0..40),
    );
    sets.check(&rt, strategy, |_| false);
}

#[test]
fn a_hit_returns_exactly_the_stored_shape_or_the_shape_was_refused() {
    let rt = runtime();
    let shapes = Subject {
        cache: &SHAPES,
        call: shaped,
        view: shape_view,
    };
    let clean = clean_shape();
    shapes.known(&rt, clean.clone(), Outcome::Hit);
    for lossy in [
        Shape {
            patch: Some(None),
            ..clean.clone()
        },
        Shape {
            maybe_unit: Some(()),
            ..clean.clone()
        },
        Shape {
            number: Num::Big(5),
            ..clean.clone()
        },
        Shape {
            floats: vec![1.0, f64::NAN],
            ..clean.clone()
        },
        Shape {
            external: External::Nested(Some(None)),
            ..clean.clone()
        },
    ] {
        shapes.known(&rt, lossy, Outcome::Refused);
    }
    shapes.check(&rt, any_shape(), must_refuse);
}
