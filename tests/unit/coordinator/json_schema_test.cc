// JsonSchema and the schema-driven JsonState: schemas outside the subset are refused by name and
// place; documents of a schema are accepted and complete at their last byte; the first byte no
// document of the schema continues with is refused; and random byte walks through the grammar
// never get stuck and always end in a document an independent validator accepts.
#include "coordinator/json_schema.h"

#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "coordinator/json_grammar.h"
#include "gtest/gtest.h"
#include "tests/unit/coordinator/json_schema_oracle.h"

namespace bitfleet::coordinator {
namespace {

using testing::Feed;

std::shared_ptr<const JsonSchema> MustCompile(const std::string& text) {
  StatusOr<std::shared_ptr<const JsonSchema>> schema = JsonSchema::Compile(text);
  EXPECT_TRUE(schema.ok()) << text << ": " << schema.status();
  return schema.ok() ? *schema : nullptr;
}

// Shaped like what pydantic writes for a model (OpenAI's client sends such schemas).
const char kPerson[] = R"({
  "$defs": {
    "Color": {"enum": ["red", "green", "blue"], "title": "Color", "type": "string"},
    "Pet": {"type": "object", "title": "Pet", "additionalProperties": false,
            "properties": {"name": {"type": "string", "maxLength": 8}, "age": {"type": "integer"}},
            "required": ["name", "age"]}
  },
  "type": "object", "title": "Person", "additionalProperties": false,
  "properties": {
    "name": {"type": "string", "minLength": 1, "description": "a name"},
    "age": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
    "color": {"$ref": "#/$defs/Color"},
    "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
    "pets": {"type": "array", "items": {"$ref": "#/$defs/Pet"}, "minItems": 1},
    "score": {"type": "number", "format": "float"},
    "ok": {"type": "boolean"},
    "nickname": {"type": ["string", "null"]}
  },
  "required": ["name", "age", "color", "tags", "pets", "score", "ok"]
})";

const char kTree[] = R"({"type": "object",
  "properties": {"value": {"type": "integer"}, "children": {"type": "array", "items": {"$ref": "#"}}},
  "required": ["value", "children"]})";

// Objects that begin alike, told apart by a discriminator (oneOf) or by their keys (anyOf):
// followed side by side until one is left.
const char kPets[] = R"({"$defs": {
    "cat": {"type": "object", "properties": {"kind": {"const": "cat"}, "meow": {"type": "boolean"}},
            "required": ["kind", "meow"]},
    "dog": {"type": "object", "properties": {"kind": {"enum": ["dog", "wolf"]}, "bark": {"type": "integer"},
            "name": {"type": "string", "maxLength": 3}}, "required": ["kind", "bark"]},
    "fish": {"type": "object", "properties": {"fins": {"type": "integer"}}, "required": ["fins"]}})";
const std::string kOneOfPets = std::string(kPets) + R"(, "oneOf": [{"$ref": "#/$defs/cat"}, {"$ref": "#/$defs/dog"}]})";
const std::string kAnyOfPets =
    std::string(kPets) + R"(, "type": "array", "items": {"anyOf": [{"$ref": "#/$defs/cat"}, {"$ref": "#/$defs/dog"},)"
    R"( {"$ref": "#/$defs/fish"}, {"type": "string", "maxLength": 2}, {"enum": ["long value"]}, {"type": "integer"},)"
    R"( {"type": "number"}]}})";

// n objects told apart by their first property, {"name": const, "arguments": ...}, the shape of
// an OpenAI tool call (coordinator/openai_tools.h), with arguments that differ per object: f<i>
// takes {"a<i>": integer}, every third also an optional string "s" and every fifth nested
// arrays.
std::string TaggedCalls(int n, const char* keyword = "anyOf") {
  std::string text = std::string(R"({")") + keyword + R"(": [)";
  for (int i = 0; i < n; ++i) {
    const std::string a = absl::StrCat("a", i);
    std::string arguments = absl::StrCat(R"({"type": "object", "properties": {")", a, R"(": {"type": "integer"})");
    if (i % 3 == 0) arguments += R"(, "s": {"type": "string", "maxLength": 4})";
    if (i % 5 == 0) arguments += R"(, "m": {"type": "array", "items": {"type": "array", "items": {"type": "null"}}})";
    arguments += absl::StrCat(R"(}, "required": [")", a, R"("], "additionalProperties": false})");
    if (i > 0) text += ", ";
    text += absl::StrCat(R"({"type": "object", "properties": {"name": {"const": "f)", i, R"("}, "arguments": )",
                         arguments, R"(}, "required": ["name", "arguments"], "additionalProperties": false})");
  }
  return text + "]}";
}

TEST(JsonSchemaTest, DocumentsOfTheSchemaAreAcceptedAndCompleteAtTheirEnd) {
  struct Case {
    const char* schema;
    std::vector<std::string> documents;
  };
  const Case cases[] = {
      {kPerson,
       {R"({"name": "Felix", "age": null, "color": "red", "tags": ["a", "b"], "pets": [{"name": "Rex", "age": 3}],)"
        R"( "score": -1.5e3, "ok": true})",
        "{\n  \"name\": \"\xC3\xA9\",\n  \"age\": 40,\n  \"color\": \"blue\",\n  \"tags\": [],\n  \"pets\": "
        "[{\"name\": \"12345678\", \"age\": -1}, {\"name\": \"x\", \"age\": 0}],\n  \"score\": 0,\n  \"ok\": false,"
        "\n  \"nickname\": \"F\"\n}"}},
      {kTree, {R"({"value": 1, "children": [{"value": 2, "children": []}, {"value": 3, "children": []}]})"}},
      {"{}", {"42", "\"s\"", "[1, {}]", "{\"a\": [true, null]}", "-0.5e-3", "null"}},
      {"true", {"false", "[]"}},
      {R"({"type": "integer"})", {"0", "-12", "7"}},
      {R"({"enum": [1, 10, "a", {"k": [1]}]})", {"1", "10", "\"a\"", "{\"k\":[1]}"}},
      {R"({"const": "x"})", {"\"x\""}},
      {R"({"type": "object", "additionalProperties": {"type": "integer"}})", {"{}", "{\"a\": 1, \"a\": 2}"}},
      {R"({"type": "object", "properties": {"a": {}, "b": {}, "c": {}}})",
       {"{}", "{\"c\": 1}", "{\"a\": 1, \"c\": 2}"}},
      {R"({"type": "array", "items": false})", {"[]"}},
      {R"({"type": "object", "additionalProperties": false})", {"{ }"}},
      {R"({"type": "string", "maxLength": 2})",
       {"\"ab\"", "\"\\n\\u00e9\"", "\"\xF0\x9F\x98\x80\xC3\xA9\"", "\"\\uD83D\\uDE00x\""}},
      {R"({"allOf": [{"$ref": "#/definitions/n"}], "definitions": {"n": {"type": "null"}}})", {"null"}},
      {R"({"type": "array", "prefix": 1, "uniqueItems": false})", {"[1, \"x\"]"}},  // unknown keywords ignored
      {kOneOfPets.c_str(), {R"({"kind": "cat", "meow": true})", R"({"kind": "wolf", "bark": 3, "name": "abc"})"}},
      {kAnyOfPets.c_str(),
       {R"([{"kind": "dog", "bark": 1}, {"fins": 2}, "ab", "long value", 1, 1.5, {"kind": "cat", "meow": false}])"}},
  };
  for (const Case& c : cases) {
    auto schema = MustCompile(c.schema);
    ASSERT_NE(schema, nullptr);
    for (const std::string& doc : c.documents) {
      JsonState state(schema.get());
      EXPECT_EQ(Feed(state, doc), doc.size()) << c.schema << "\n" << doc;
      EXPECT_TRUE(state.complete()) << c.schema << "\n" << doc;
      EXPECT_TRUE(testing::ValidatesAgainst(doc, c.schema)) << "the oracle disagrees: " << doc;
    }
  }
}

TEST(JsonSchemaTest, TheFirstByteNoDocumentContinuesWithIsRefused) {
  struct Case {
    const char* schema;
    std::string prefix;  // taken
    char refused;
  };
  const std::string person = R"({"name": "x", "age": 1, "color": "red", )";
  const Case cases[] = {
      {kPerson, "{\"", 'a'},                       // "name" is required first
      {kPerson, "{\"name\": \"", '"'},             // minLength 1
      {kPerson, "{\"name\": \"x\"", '}'},          // required properties left
      {kPerson, "{\"name\": \"x\", \"age\": ", '"'},  // integer or null
      {kPerson, "{\"name\": \"x\", \"age\": 1", '.'},  // an integer
      {kPerson, "{\"name\": \"x\", \"age\": 1, \"color\": \"", 'y'},  // the enum
      {kPerson, person + R"("tags": ["a", "b", "c")", ','},  // maxItems 3
      {kPerson, person + R"("tags": [], "pets": [)", ']'},   // minItems 1
      {kPerson, person + R"("tags": [], "pets": [{"name": "12345678)", '9'},  // maxLength 8
      {kPerson, person + R"("tags": [], "pets": [{"name": "a", "age": 1)", ','},  // no more properties
      {kPerson, person + R"("tags": [], "pets": [{"name": "a", "age": 1}], "score": 1, "ok": true, ")", 'x'},
      {kPerson, person + R"("tags": [], "pets": [{"name": "a", "age": 1}], "score": 1, "ok": true, "nickname": null)",
       ','},
      {R"({"type": "object", "properties": {"a": {}, "b": {}, "c": {}}})", R"({"b": 1, ")", 'a'},  // in order
      {R"({"type": "integer"})", "1", 'e'},
      {R"({"type": "integer"})", "1", ' '},  // nothing after the top-level value
      {R"({"enum": [1, 10]})", "10", '0'},
      {R"({"enum": [1, 10]})", "", '2'},
      {R"({"type": "string", "maxLength": 2})", "\"ab", 'c'},
      {"{}", "\"\\ud", 'F'},        // a low surrogate escape alone
      {"{}", "\"\\uD800", '"'},     // a high one without its low half
      {"{}", "\"\\uD800\\", 'n'},
      {"{}", "\"\\uD800\\u", '0'},
      {"{}", "\"\\uD800\\uD", '8'},
      {R"({"type": "string", "minLength": 2})", "\"\xC3\xA9", '"'},  // one character
      {R"({"type": "array", "items": false})", "[", '1'},
      {R"({"type": "object", "additionalProperties": false})", "{", '"'},
      {R"({"type": ["string", "null"]})", "", '1'},
      {"{}", "[1,", ']'},
      {kOneOfPets.c_str(), "{\"kind\": \"", 'f'},      // neither cat nor dog
      {kOneOfPets.c_str(), "{\"kind\": \"cat\", \"", 'b'},  // a cat does not bark
      {kOneOfPets.c_str(), "{\"kind\": \"dog\", \"bark\": 1, \"name\": \"abc", 'd'},
      {kAnyOfPets.c_str(), "[\"ab", 'c'},                   // too long a string, not "long value"
      {kAnyOfPets.c_str(), "[{\"", 'x'},
      {kAnyOfPets.c_str(), "[1.5", '.'},
  };
  for (const Case& c : cases) {
    auto schema = MustCompile(c.schema);
    ASSERT_NE(schema, nullptr);
    JsonState state(schema.get());
    ASSERT_EQ(Feed(state, c.prefix), c.prefix.size()) << c.schema << "\n" << c.prefix;
    const JsonState before = state;
    EXPECT_FALSE(state.Advance(static_cast<uint8_t>(c.refused))) << c.prefix << " + " << c.refused;
    EXPECT_EQ(state, before);
  }
  // A pair counts one character.
  auto two = MustCompile(R"({"type": "string", "maxLength": 2})");
  JsonState pair(two.get());
  EXPECT_EQ(Feed(pair, "\"\\uD83D\\uDE00\\u00e9"), 19u);
  EXPECT_FALSE(pair.Advance('x'));
  EXPECT_TRUE(pair.Advance('"'));
}

TEST(JsonSchemaTest, NumbersAndNumberLiteralsAtTheTopLevelCompleteWhileTheyMayGoOn) {
  auto integer = MustCompile(R"({"type": "integer"})");
  JsonState state(integer.get());
  EXPECT_FALSE(state.complete());
  ASSERT_TRUE(state.Advance('-'));
  EXPECT_FALSE(state.complete());
  ASSERT_TRUE(state.Advance('4'));
  EXPECT_TRUE(state.complete());
  EXPECT_TRUE(state.Advance('2'));
  auto literals = MustCompile(R"({"enum": [1, 10]})");
  JsonState one(literals.get());
  ASSERT_TRUE(one.Advance('1'));
  EXPECT_TRUE(one.complete());
  ASSERT_TRUE(one.Advance('0'));
  EXPECT_TRUE(one.complete());
  EXPECT_FALSE(one.Advance('0'));
}

TEST(JsonSchemaTest, SchemasOutsideTheSubsetAreRefusedByNameAndPlace) {
  std::string many = R"({"type": "object", "properties": {)";
  for (int i = 0; i <= 64; ++i) many += (i ? ", " : "") + std::string("\"p") + std::to_string(i) + "\": {}";
  many += "}}";
  const std::pair<std::string, std::string> cases[] = {
      {"not json", "is not valid JSON"},
      {R"({"type": "string", "pattern": "a+"})", "at #: 'pattern' is not supported"},
      {R"({"properties": {"a/b": {"minimum": 0}}})", "at #/properties/a~1b: 'minimum' is not supported"},
      {R"({"type": "array", "uniqueItems": true})", "'uniqueItems' is not supported"},
      {R"({"oneOf": [{"type": "object"}, {"$ref": "#/$defs/o"}], "$defs": {"o": {"properties": {"x": {}}}}})",
       "at #: oneOf alternatives that begin alike must be objects told apart"},
      {R"({"oneOf": [{"type": "string"}, {"enum": ["a"]}]})", "oneOf alternatives that begin alike"},
      {R"({"oneOf": [{"type": "integer"}, {"type": "number"}]})", "oneOf alternatives that begin alike"},
      {kPets + std::string(R"(, "oneOf": [{"$ref": "#/$defs/cat"}, {"$ref": "#/$defs/cat"}]})"),
       "oneOf alternatives overlap"},
      {kPets + std::string(R"(, "oneOf": [{"$ref": "#/$defs/cat"}, {"$ref": "#/$defs/fish"}]})"),
       "oneOf alternatives that begin alike must be objects told apart"},
      {R"({"anyOf": [{"type": "integer"}, {"type": "number"}, {"type": "integer"}, {"type": "number"},)"
       R"( {"type": "integer"}, {"type": "number"}, {"type": "integer"}, {"type": "number"}, {"type": "integer"}]})",
       "more than 8 alternatives begin with the same kind of byte"},
      {R"({"$ref": "#/$defs/missing"})", "'$ref' #/$defs/missing does not resolve"},
      {R"({"$ref": "other.json"})", "'$ref' must be"},
      {R"({"type": "strin"})", "unknown type 'strin'"},
      {R"({"enum": []})", "admit no value"},
      {R"({"type": "integer", "enum": [1.5]})", "admit no value"},
      {R"({"type": "object", "required": ["a"], "properties": {"b": {}}})", "'required' lists 'a', which"},
      {R"({"$defs": {"A": {"$ref": "#/$defs/B"}, "B": {"$ref": "#/$defs/A"}}, "$ref": "#/$defs/A"})",
       "refers to itself with no object or array between"},
      {R"({"type": "array", "minItems": 3, "maxItems": 2})", "'minItems' 3 > 'maxItems' 2"},
      {R"({"type": "string", "maxLength": -1})", "'maxLength' must be a non-negative integer"},
      {R"({"type": "object", "properties": {"next": {"$ref": "#"}}, "required": ["next"]})",
       "no value satisfies it within 32 levels"},
      {many, "more than 64 properties"},
      {std::string(100, '[') + std::string(100, ']'), "nests deeper than 64"},
      {"false", "admits no value"},
      {R"({"allOf": [{}, {}]})", "'allOf' is supported with one member"},
      {R"({"$ref": "#", "type": "object"})", "'type' beside '$ref' is not supported"},
      {R"({"type": "object", "anyOf": [{}]})", "'type' beside 'anyOf' is not supported"},
      {R"({"type": "array", "items": [{}]})", "tuples"},
      {R"({"enum": ["a"], "minLength": 1})", "'minLength' beside 'enum' or 'const'"},
  };
  std::string chain = R"({"$ref": "#/$defs/d0", "$defs": {)";
  for (int i = 0; i < 70; ++i) {
    chain += "\"d" + std::to_string(i) + "\": {\"$ref\": \"#/$defs/d" + std::to_string(i + 1) + "\"}, ";
  }
  chain += R"("d70": {"type": "integer"}}})";
  std::vector<std::pair<std::string, std::string>> all(std::begin(cases), std::end(cases));
  all.emplace_back(chain, "schemas nest (through properties, items and $ref) deeper than 64");
  for (const auto& [text, message] : all) {
    StatusOr<std::shared_ptr<const JsonSchema>> schema = JsonSchema::Compile(text);
    ASSERT_FALSE(schema.ok()) << text;
    EXPECT_EQ(schema.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(schema.status().message()).find(message), std::string::npos)
        << text << "\n" << schema.status().message();
  }
}

// Best effort (OpenAI's "strict": false): assertions outside the subset are ignored, oneOf is
// anyOf; structures outside it are still refused.
TEST(JsonSchemaTest, BestEffortIgnoresAssertionsOutsideTheSubset) {
  const std::pair<const char*, std::string> cases[] = {
      {R"({"type": "string", "pattern": "a+", "format": "email"})", "\"b\""},
      {R"({"type": "integer", "minimum": 0, "maximum": 9})", "12"},
      {R"({"type": "array", "uniqueItems": true, "items": {"type": "integer"}})", "[1, 1]"},
      {R"({"$ref": "#/$defs/n", "minimum": 1, "$defs": {"n": {"type": "number"}}})", "0.5"},
      {R"({"oneOf": [{"type": "integer"}, {"type": "number"}]})", "7"},
  };
  for (const auto& [text, document] : cases) {
    EXPECT_FALSE(JsonSchema::Compile(text).ok()) << text;
    StatusOr<std::shared_ptr<const JsonSchema>> schema = JsonSchema::Compile(text, /*best_effort=*/true);
    ASSERT_TRUE(schema.ok()) << text << ": " << schema.status();
    JsonState state(schema->get());
    EXPECT_EQ(Feed(state, document), document.size()) << text;
    EXPECT_TRUE(state.complete()) << text;
  }
  for (const char* text : {R"({"type": "array", "items": [{}]})", R"({"allOf": [{}, {}]})", R"({"$ref": "#/x"})"}) {
    EXPECT_FALSE(JsonSchema::Compile(text, /*best_effort=*/true).ok()) << text;
  }
}

// Random walks over bytes: from every state some byte continues (or the document is complete),
// and every finished document validates. Leaning towards closing bytes as the text grows keeps
// the walks finite.
TEST(JsonSchemaTest, RandomWalksNeverStickAndEndInValidDocuments) {
  const std::string schemas[] = {
      kPerson,
      kTree,
      "{}",
      R"({"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 4})",
      R"({"type": ["string", "null"], "maxLength": 3})",
      R"({"type": "object", "additionalProperties": {"type": "integer"}})",
      R"({"enum": [1, 10, 100, -1, "a", "ab", true, null, [1], {"k": "v"}]})",
      R"({"type": "object", "properties": {"a": {"type": "string", "minLength": 3}, "b": {"const": 2},)"
      R"( "c": {"type": "array", "items": {"$ref": "#"}}}, "required": ["b"]})",
      kOneOfPets,
      kAnyOfPets,
      TaggedCalls(20),
      absl::StrCat(R"({"type": "array", "items": )", TaggedCalls(12, "oneOf"), "}"),
  };
  std::mt19937 rng(11);
  for (const std::string& text : schemas) {
    auto schema = MustCompile(text);
    ASSERT_NE(schema, nullptr);
    // Fewer runs where paths split: each of their steps tries 256 bytes on several paths.
    const int runs = schema->ambiguous() ? 60 : 200;
    int finished = 0;
    for (int run = 0; run < runs; ++run) {
      JsonState state(schema.get());
      std::string doc;
      for (int step = 0; step < 4000; ++step) {
        if (state.complete() && (rng() % 3 == 0 || doc.size() > 200)) break;
        std::vector<uint8_t> bytes;
        for (int b = 0; b < 256; ++b) {
          JsonState next = state;
          if (next.Advance(static_cast<uint8_t>(b))) bytes.push_back(static_cast<uint8_t>(b));
        }
        if (bytes.empty()) break;
        uint8_t pick = bytes[rng() % bytes.size()];
        if (doc.size() > 60) {
          for (uint8_t closer : {'"', '}', ']'}) {
            if (std::find(bytes.begin(), bytes.end(), closer) != bytes.end() && rng() % 4 != 0) pick = closer;
          }
        }
        ASSERT_TRUE(state.Advance(pick));
        doc.push_back(static_cast<char>(pick));
      }
      ASSERT_TRUE(state.complete()) << "stuck or endless: " << text << "\n" << doc;
      EXPECT_TRUE(testing::ValidatesAgainst(doc, text)) << text << "\n" << doc;
      ++finished;
    }
    EXPECT_EQ(finished, runs);
  }
}

// Objects told apart by a first property of string constants (tool calls by "name") are one
// path however many there are, and each constant admits only its own object's properties.
TEST(JsonSchemaTest, ObjectsToldApartByTheirFirstPropertyAreFollowedAsOne) {
  for (const char* keyword : {"anyOf", "oneOf"}) {
    const std::string text = TaggedCalls(40, keyword);
    auto schema = MustCompile(text);
    ASSERT_NE(schema, nullptr);
    EXPECT_FALSE(schema->ambiguous()) << "one path, not one per object";
    for (int i : {0, 7, 8, 9, 15, 39}) {
      const std::string a = absl::StrCat("a", i);
      const std::string doc = absl::StrCat(R"({"name": "f)", i, R"(", "arguments": {")", a, R"(": 12}})");
      JsonState state(schema.get());
      EXPECT_EQ(Feed(state, doc), doc.size()) << doc;
      EXPECT_TRUE(state.complete()) << doc;
      EXPECT_EQ(state.paths(), 1);
      EXPECT_TRUE(testing::ValidatesAgainst(doc, text)) << doc;
      // Another function's argument after this name is refused at its first differing byte.
      const std::string other = absl::StrCat(R"({"name": "f)", i, R"(", "arguments": {"a)");
      JsonState wrong(schema.get());
      ASSERT_EQ(Feed(wrong, other), other.size());
      std::string digits = std::to_string(i);  // another function's key: the last digit changed
      digits.back() = static_cast<char>('0' + (digits.back() - '0' + 1) % 10);
      EXPECT_EQ(Feed(wrong, digits), digits.size() - 1) << other << digits;
    }
    // Names no object has, a missing name, a name that only begins like one.
    for (const std::string& prefix : {std::string(R"({"name": "g)"), std::string(R"({"arguments)"),
                                      std::string(R"({"name": "f40)"), std::string(R"({"name": "f3", "s)")}) {
      JsonState state(schema.get());
      EXPECT_LT(Feed(state, prefix), prefix.size()) << prefix;
    }
    // f1 (an object) and f10..f19 share the bytes "f1: the quote decides.
    JsonState one(schema.get());
    ASSERT_EQ(Feed(one, R"({"name": "f1")"), 13u);
    EXPECT_EQ(Feed(one, R"(, "arguments": {"a1": 1}})"), 25u);
    EXPECT_TRUE(one.complete());
  }
  // Nesting: a tagged object is begun only where the deepest of its objects still fits (the
  // constant, read later, may name that one). f1's arguments need three objects.
  const std::string nested =
      R"({"anyOf": [{"type": "array", "items": {"$ref": "#"}},)"
      R"( {"type": "object", "properties": {"name": {"const": "f0"}, "arguments": {"type": "object"}},)"
      R"( "required": ["name", "arguments"]},)"
      R"( {"type": "object", "properties": {"name": {"const": "f1"}, "arguments": {"type": "object", "properties":)"
      R"( {"x": {"type": "object", "properties": {"y": {"type": "object", "properties": {"z": {"type": "null"}},)"
      R"( "required": ["z"]}}, "required": ["y"]}}, "required": ["x"]}}, "required": ["name", "arguments"]}]})";
  auto deep = MustCompile(nested);
  ASSERT_NE(deep, nullptr);
  EXPECT_FALSE(deep->ambiguous());
  const std::string call = R"({"name": "f1", "arguments": {"x": {"y": {"z": null}}}})";
  JsonState fits(deep.get());
  const std::string at28 = std::string(28, '[') + call + std::string(28, ']');
  EXPECT_EQ(Feed(fits, at28), at28.size());
  EXPECT_TRUE(fits.complete());
  JsonState too_deep(deep.get());
  ASSERT_EQ(Feed(too_deep, std::string(29, '[')), 29u);
  EXPECT_FALSE(too_deep.Advance('{')) << "f1 would not fit at 33";
  EXPECT_TRUE(too_deep.Advance(']'));
  // Not told apart by a constant first (an enum of two for one object, a key that differs, a
  // constant listed twice): followed side by side as before, and more than 8 are refused.
  const std::string two_constants = R"({"anyOf": [{"type": "object", "properties": {"k": {"enum": ["a", "b"]}},)"
                                    R"( "required": ["k"]}, {"type": "object", "properties": {"k": {"const": "c"}},)"
                                    R"( "required": ["k"]}]})";
  EXPECT_TRUE(MustCompile(two_constants)->ambiguous());
  std::string twice = TaggedCalls(3);
  twice.replace(twice.find(R"("f2")"), 4, R"("f1")");
  EXPECT_TRUE(MustCompile(twice)->ambiguous());
  std::string mixed = TaggedCalls(9);
  mixed.replace(mixed.find(R"("name")"), 6, R"("nom")");
  mixed.replace(mixed.find(R"("required": ["name")"), 18, R"("required": ["nom")");
  EXPECT_FALSE(JsonSchema::Compile(mixed).ok()) << "nine objects not told apart";
}

TEST(JsonSchemaTest, OptionalNestingStopsWhereItCouldNotFinish) {
  auto tree = MustCompile(kTree);
  JsonState state(tree.get());
  // Each level opens an object and an array: after 15 levels (30 containers) one more level fits
  // (its array at 32), after 16 no object does.
  std::string doc;
  for (int level = 0; level < 15; ++level) doc += R"({"value": 0, "children": [)";
  ASSERT_EQ(Feed(state, doc), doc.size());
  EXPECT_TRUE(state.Advance(']'));
  JsonState deeper(tree.get());
  ASSERT_EQ(Feed(deeper, doc), doc.size());
  EXPECT_TRUE(deeper.Advance('{')) << "depth 31: an object whose array fits at 32";
  JsonState deepest(tree.get());
  doc += R"({"value": 0, "children": [)";
  ASSERT_EQ(Feed(deepest, doc), doc.size());
  EXPECT_FALSE(deepest.Advance('{'));
  EXPECT_TRUE(deepest.Advance(']'));

  // An optional property whose value could not be finished is not offered.
  auto chain = MustCompile(R"({"type": "object", "properties": {"child": {"$ref": "#"}}})");
  JsonState chained(chain.get());
  std::string objects;
  for (int level = 1; level < JsonState::kMaxDepth; ++level) objects += R"({"child": )";
  ASSERT_EQ(Feed(chained, objects + "{"), objects.size() + 1);
  EXPECT_FALSE(chained.Advance('"')) << "a 33rd object";
  EXPECT_TRUE(chained.Advance('}'));
}

}  // namespace
}  // namespace bitfleet::coordinator
