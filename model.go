// model.go: the user and goal types, their request bodies and validation, and
// the hand-written marshal functions that decide which fields a client sees.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/invopop/validation"
	"github.com/invopop/validation/is"
)

// timeFormat is how timestamps are stored and shown: RFC 3339, UTC,
// milliseconds. It is fixed-width, so text order is time order.
const timeFormat = "2006-01-02T15:04:05.000Z"

// formatTime renders t in timeFormat.
func formatTime(t time.Time) string { return t.UTC().Format(timeFormat) }

// User is a row of the users table. It is never encoded directly: appendUser
// decides what a client sees, so a new column cannot leak by accident.
type User struct {
	ID           string  `db:"id"`
	Username     string  `db:"username"`
	Email        *string `db:"email"`
	FullName     *string `db:"full_name"`
	PasswordHash string  `db:"password_hash"`
	Version      int64   `db:"version"`
	CreatedAt    string  `db:"created_at"`
	ModifiedAt   string  `db:"modified_at"`
}

// Goal is a row of the goals table; appendGoal decides what a client sees.
type Goal struct {
	ID            string  `db:"id"`
	UserID        string  `db:"user_id"`
	Title         string  `db:"title"`
	Period        string  `db:"period"`
	TargetMinutes int     `db:"target_minutes"`
	Description   *string `db:"description"`
	Version       int64   `db:"version"`
	CreatedAt     string  `db:"created_at"`
	ModifiedAt    string  `db:"modified_at"`
}

// fromValidation turns invopop/validation errors into fieldErrors, keeping
// any other error (an internal one) as it is.
func fromValidation(err error) error {
	var verrs validation.Errors
	if !errors.As(err, &verrs) {
		return err
	}
	out := fieldErrors{}
	for field, e := range verrs {
		var ie validation.InternalError
		if errors.As(e, &ie) {
			return fmt.Errorf("validate %s: %w", field, e)
		}
		out[field] = e.Error()
	}
	return out
}

// optional is one field of a request body: absent, null, or a value. It lets
// PUT and PATCH tell "leave it" from "clear it".
type optional[T any] struct {
	Set   bool
	Null  bool
	Value T
}

// decodeField fills dst from raw, recording null; a wrong JSON type is
// reported as a message naming the expected type.
func decodeField[T any](raw json.RawMessage, dst *optional[T], want string) string {
	dst.Set = true
	if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		dst.Null = true
		return ""
	}
	if err := json.Unmarshal(raw, &dst.Value); err != nil {
		return "must be " + want
	}
	return ""
}

// userInput is the body of POST, PUT and PATCH on a user. passwordHash is
// filled by the handler after hashing and is never decoded.
type userInput struct {
	Username     optional[string]
	Email        optional[string]
	FullName     optional[string]
	Password     optional[string]
	passwordHash string
}

// userIgnoredFields may appear in a user body and are ignored: the read-only
// fields and the goals relation, so a client may send back what it read
// with any ?show=.
var userIgnoredFields = map[string]bool{"id": true, "created_at": true, "modified_at": true, "goals": true}

// bodyFields maps the field names a body may hold to the decoder that
// fills each one; a decoder returns a problem message, or "".
type bodyFields map[string]func(raw json.RawMessage) string

// field decodes into dst, naming the JSON type it wants in its message.
func field[T any](dst *optional[T], want string) func(json.RawMessage) string {
	return func(raw json.RawMessage) string { return decodeField(raw, dst, want) }
}

// integer decodes into dst a JSON number without a fractional part, however
// it is written (30, 30.0, 3e1): JSON Schema's integer, which the OpenAPI
// document names, and what a client computing 0.5*60 sends. The literal
// is read exactly, not through a float64 (which would round
// 10080.0000000000001 to an integer, and call 1e20 a fraction); an integer
// too large for any rule is held as the largest int32, of its sign, for the
// field's range rule to refuse.
func integer(dst *optional[int]) func(json.RawMessage) string {
	return func(raw json.RawMessage) string {
		lit := string(bytes.TrimSpace(raw))
		dst.Set = true
		switch {
		case lit == "null":
			dst.Null = true
			return ""
		case lit == "" || lit[0] != '-' && (lit[0] < '0' || lit[0] > '9'): // not a number
			return "must be an integer"
		}
		n, ok := integerLiteral(lit)
		if !ok {
			return "must be an integer"
		}
		dst.Value = n
		return ""
	}
}

// integerLiteral reads the JSON number literal lit (valid: the body has
// been parsed) exactly: ok is false when its value has a fractional part.
// Beyond ±(2^31-1) it is clamped there.
func integerLiteral(lit string) (n int, ok bool) {
	neg := strings.HasPrefix(lit, "-")
	mantissa, exponent, hasExponent := strings.Cut(strings.TrimPrefix(lit, "-"), "e")
	if !hasExponent {
		mantissa, exponent, hasExponent = strings.Cut(mantissa, "E")
	}
	whole, fraction, _ := strings.Cut(mantissa, ".")
	digits := strings.TrimLeft(whole+fraction, "0")
	if digits == "" {
		return 0, true // zero, however written
	}
	// The value is digits × 10^scale.
	const far = 1 << 30 // further than any body's digits reach
	scale := -len(fraction)
	if hasExponent {
		e, err := strconv.Atoi(exponent)
		switch {
		case err != nil || e > far:
			e = far
			if strings.HasPrefix(exponent, "-") {
				e = -far
			}
		case e < -far:
			e = -far
		}
		scale += e
	}
	significant := strings.TrimRight(digits, "0")
	scale += len(digits) - len(significant)
	switch {
	case scale < 0:
		return 0, false
	case len(significant)+scale > 10: // past 2^31 whatever its digits
		return clampInt32(neg), true
	}
	v, _ := strconv.ParseInt(significant, 10, 64)
	for ; scale > 0; scale-- {
		v *= 10
	}
	if v > math.MaxInt32 {
		return clampInt32(neg), true
	}
	if neg {
		v = -v
	}
	return int(v), true
}

// clampInt32 is the int32 farthest from zero of the sign neg says.
func clampInt32(neg bool) int {
	if neg {
		return -math.MaxInt32
	}
	return math.MaxInt32
}

// decodeFields runs the decoder of every field in obj. Names in ignored
// are skipped (read-only fields and relations a client may send back); any
// other name is an unknown field, and a field given more than once a
// problem too. It returns every problem at once.
func decodeFields(obj jsonObject, fields bodyFields, ignored map[string]bool) fieldErrors {
	errs := fieldErrors{}
	for name, raw := range obj.fields {
		decode, known := fields[name]
		switch {
		case !known && !ignored[name]:
			errs[name] = unknownField
		case obj.repeated[name]:
			errs[name] = "given more than once"
		case known:
			if msg := decode(raw); msg != "" {
				errs[name] = msg
			}
		}
	}
	return errs
}

// decodeUserInput maps a decoded JSON object onto userInput and checks
// it; creating makes the required fields required. Unknown fields, wrong
// types and broken rules are reported together.
func decodeUserInput(obj jsonObject, creating bool) (userInput, error) {
	var in userInput
	errs := decodeFields(obj, bodyFields{
		"username":  field(&in.Username, "a string"),
		"email":     field(&in.Email, "a string"),
		"full_name": field(&in.FullName, "a string"),
		"password":  field(&in.Password, "a string"),
	}, userIgnoredFields)
	return in, withRuleErrors(errs, in.validate(creating))
}

// withRuleErrors adds to the decoding problems errs the field rules that
// failed (a field that did not decode keeps its decoding message).
func withRuleErrors(errs fieldErrors, rules error) error {
	var fe fieldErrors
	if rules != nil && !errors.As(rules, &fe) {
		return rules // an internal error of the validator
	}
	errs.merge(fe)
	return errs.orNil()
}

var (
	usernamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)
	usernameRules   = []validation.Rule{
		validation.Required,
		validation.RuneLength(3, 32).Error("the length must be between 3 and 32"),
		validation.Match(usernamePattern).Error("must start with a letter or digit and hold only letters, digits, '_', '.' and '-'"),
	}
	emailRules = []validation.Rule{
		validation.Required,
		validation.RuneLength(1, 254).Error("the length must be no more than 254"),
		is.EmailFormat,
	}
	fullNameRules = []validation.Rule{
		validation.RuneLength(0, 200).Error("the length must be no more than 200"),
		noControlChars,
	}
	passwordRules = []validation.Rule{
		validation.Required,
		validation.RuneLength(8, 256).Error("the length must be between 8 and 256"),
	}
	titleRules = []validation.Rule{
		validation.Required,
		validation.RuneLength(1, 200).Error("the length must be between 1 and 200"),
		noControlChars,
	}
	descriptionRules = []validation.Rule{
		validation.RuneLength(0, 2000).Error("the length must be no more than 2000"),
		noNUL,
	}
	periodRules = []validation.Rule{validation.Required, validation.In("day", "week").Error("must be day or week")}
	// Min and Max skip zero values, so the range is checked by hand.
	targetMinutesRules = []validation.Rule{validation.By(func(v any) error {
		if n, _ := v.(int); n < 1 || n > 10080 {
			return validation.NewError("validation_out_of_range", "must be between 1 and 10080")
		}
		return nil
	})}

	noControlChars = validation.NewStringRule(func(s string) bool {
		return strings.IndexFunc(s, unicode.IsControl) < 0
	}, "must not contain control characters")
	// noNUL keeps U+0000 out of free text, where other control characters
	// (tabs, line breaks) are fine: PostgreSQL's text cannot hold it, and
	// both engines refuse what one of them cannot store.
	noNUL = validation.NewStringRule(func(s string) bool { return !hasNUL(s) },
		"must not contain the NUL character (U+0000)")
)

// hasNUL reports whether s holds U+0000, which PostgreSQL's text cannot.
func hasNUL(s string) bool { return strings.IndexByte(s, 0) >= 0 }

// fieldRule says how a body field is checked: required fields must be
// present on create; fields that are not nullable may never be null (null
// clears a nullable one).
type fieldRule struct {
	required, nullable bool
	rules              []validation.Rule
}

var (
	usernameField = fieldRule{required: true, rules: usernameRules}
	emailField    = fieldRule{nullable: true, rules: emailRules}
	fullNameField = fieldRule{nullable: true, rules: fullNameRules}
	passwordField = fieldRule{required: true, rules: passwordRules}

	titleField         = fieldRule{required: true, rules: titleRules}
	periodField        = fieldRule{rules: periodRules}
	targetMinutesField = fieldRule{required: true, rules: targetMinutesRules}
	descriptionField   = fieldRule{nullable: true, rules: descriptionRules}
)

// checkField validates one optional field against its rule; on update
// (creating false) only a field that is present is checked.
func checkField[T any](f optional[T], rule fieldRule, creating bool) error {
	switch {
	case !f.Set && rule.required && creating:
		return validation.NewError("validation_required", "cannot be blank")
	case !f.Set:
		return nil
	case f.Null && !rule.nullable:
		return validation.NewError("validation_not_null", "cannot be null")
	case f.Null:
		return nil
	}
	return validation.Validate(f.Value, rule.rules...)
}

// validate checks every field at once. creating makes the required fields
// required; on update only the fields present are checked.
func (in *userInput) validate(creating bool) error {
	return fromValidation(validation.Errors{
		"username":  checkField(in.Username, usernameField, creating),
		"email":     checkField(in.Email, emailField, creating),
		"full_name": checkField(in.FullName, fullNameField, creating),
		"password":  checkField(in.Password, passwordField, creating),
	}.Filter())
}

// apply copies the fields present in the input onto u.
func (in *userInput) apply(u *User) (changed bool) {
	before := *u
	if in.Username.Set {
		u.Username = in.Username.Value
	}
	if in.Email.Set {
		u.Email = nullable(in.Email)
	}
	if in.FullName.Set {
		u.FullName = nullable(in.FullName)
	}
	if in.passwordHash != "" {
		u.PasswordHash = in.passwordHash
	}
	return u.Username != before.Username || !sameText(u.Email, before.Email) ||
		!sameText(u.FullName, before.FullName) || u.PasswordHash != before.PasswordHash
}

// sameText reports whether two nullable columns hold the same value.
func sameText(a, b *string) bool {
	return a == nil && b == nil || a != nil && b != nil && *a == *b
}

// nullable turns a set optional string into the column value: nil for null.
func nullable(f optional[string]) *string {
	if f.Null {
		return nil
	}
	v := f.Value
	return &v
}

// goalInput is the body of POST, PUT and PATCH on a goal. user_id comes
// from the path and is read-only, like id and the timestamps.
type goalInput struct {
	Title         optional[string]
	Period        optional[string]
	TargetMinutes optional[int]
	Description   optional[string]
}

// goalIgnoredFields may appear in a goal body and are ignored: the
// read-only fields (user_id comes from the path when the goal is created
// and never changes) and the user relation.
var goalIgnoredFields = map[string]bool{"id": true, "created_at": true, "modified_at": true, "user_id": true, "user": true}

// decodeGoalInput maps a decoded JSON object onto goalInput and checks it;
// creating makes title and target_minutes required.
func decodeGoalInput(obj jsonObject, creating bool) (goalInput, error) {
	var in goalInput
	errs := decodeFields(obj, bodyFields{
		"title":          field(&in.Title, "a string"),
		"period":         field(&in.Period, "a string"),
		"target_minutes": integer(&in.TargetMinutes),
		"description":    field(&in.Description, "a string"),
	}, goalIgnoredFields)
	return in, withRuleErrors(errs, in.validate(creating))
}

// validate checks every goal field at once; creating makes title and
// target_minutes required.
func (in *goalInput) validate(creating bool) error {
	return fromValidation(validation.Errors{
		"title":          checkField(in.Title, titleField, creating),
		"period":         checkField(in.Period, periodField, creating),
		"target_minutes": checkField(in.TargetMinutes, targetMinutesField, creating),
		"description":    checkField(in.Description, descriptionField, creating),
	}.Filter())
}

// apply copies the fields present in the input onto g.
func (in *goalInput) apply(g *Goal) (changed bool) {
	before := *g
	if in.Title.Set {
		g.Title = in.Title.Value
	}
	if in.Period.Set {
		g.Period = in.Period.Value
	}
	if in.TargetMinutes.Set {
		g.TargetMinutes = in.TargetMinutes.Value
	}
	if in.Description.Set {
		g.Description = nullable(in.Description)
	}
	return g.Title != before.Title || g.Period != before.Period ||
		g.TargetMinutes != before.TargetMinutes || !sameText(g.Description, before.Description)
}

// credentials is the body of POST /api/authenticate.
type credentials struct {
	Username optional[string]
	Password optional[string]
}

// decodeCredentials maps a decoded JSON object onto credentials. Both
// fields are required and must be a username and a password that some
// user could have (the same rules as on create), so an input that cannot
// match is refused before any hashing; nothing else is allowed.
func decodeCredentials(obj jsonObject) (credentials, error) {
	var c credentials
	errs := decodeFields(obj, bodyFields{
		"username": field(&c.Username, "a string"),
		"password": field(&c.Password, "a string"),
	}, nil)
	rules := fromValidation(validation.Errors{
		"username": checkField(c.Username, usernameField, true),
		"password": checkField(c.Password, passwordField, true),
	}.Filter())
	return c, withRuleErrors(errs, rules)
}

// foldKey is the key under which s is unique without regard to case:
// every rune replaced by one fixed member of its Unicode simple case
// folding orbit (the one strings.EqualFold compares by), preferring the
// lowercase letter. It is computed here, not by the database, so SQLite
// and PostgreSQL agree ("Ü@example.com" and "ü@example.com" are one
// address on both).
func foldKey(s string) string {
	ascii := true
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		return strings.ToLower(s)
	}
	return strings.Map(foldRune, s)
}

// foldRune is the member of r's simple case folding orbit that stands for
// the orbit: the lowercase of the orbit's smallest rune when that is in
// the orbit, else the smallest rune. It depends only on the orbit, so two
// runes fold alike exactly when unicode.SimpleFold links them.
func foldRune(r rune) rune {
	least := r
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		least = min(least, f)
	}
	if lower := unicode.ToLower(least); lower != least {
		for f := unicode.SimpleFold(least); f != least; f = unicode.SimpleFold(f) {
			if f == lower {
				return lower
			}
		}
	}
	return least
}

// emailKey is the unique key of an optional email: nil (SQL NULL, which a
// unique index lets many rows share) when there is none.
func emailKey(email *string) any {
	if email == nil {
		return nil
	}
	return emailFoldKey(*email)
}

// emailFoldKey is the key under which an email is unique: foldKey, and
// without the dot a domain may end in ("a@example.com." is the mailbox of
// "a@example.com"). The address is stored as sent.
func emailFoldKey(email string) string {
	return foldKey(strings.TrimRight(email, "."))
}

// parseID accepts only the canonical lowercase text of a UUID, so one
// resource has one URL.
func parseID(s string) (string, bool) {
	if len(s) != 36 {
		return "", false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return "", false
			}
		case !('0' <= c && c <= '9' || 'a' <= c && c <= 'f'):
			return "", false
		}
	}
	return s, true
}

// newID returns a new UUIDv7: time-ordered, so id order is creation order.
func newID() (string, error) {
	u, err := uuid.NewV7()
	if err != nil {
		return "", fmt.Errorf("new id: %w", err)
	}
	return u.String(), nil
}

// userShow says which optional parts of a user a response includes.
type userShow struct {
	Email, FullName bool
	Goals           bool
	GoalDescription bool
}

// extras are the optional columns a read of the user needs for s.
func (s userShow) extras() userExtras {
	return userExtras{Email: s.Email, FullName: s.FullName}
}

// goalShow says which optional parts of a goal a response includes.
type goalShow struct {
	Description             bool
	User                    bool
	UserEmail, UserFullName bool
}

// ownerShow is what a goal's embedded owner shows.
func ownerShow(show goalShow) userShow {
	return userShow{Email: show.UserEmail, FullName: show.UserFullName}
}

var (
	userDefaultFields = fieldSet("id", "username", "created_at", "modified_at")
	goalDefaultFields = fieldSet("id", "user_id", "title", "period", "target_minutes", "created_at", "modified_at")
)

// fieldSet is a set of field names.
func fieldSet(names ...string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

// showNames splits the repeated, comma-separated ?show= values into names,
// skipping empty ones.
func showNames(values []string) []string {
	var names []string
	for _, v := range values {
		for _, n := range strings.Split(v, ",") {
			if n = strings.TrimSpace(n); n != "" {
				names = append(names, n)
			}
		}
	}
	return names
}

// showError reports the names that are not fields or relations of the
// model, or that are hidden. At most ten are named, so a huge query cannot
// make a huge answer.
func showError(bad []string) error {
	if len(bad) == 0 {
		return nil
	}
	seen := map[string]bool{}
	var uniq []string
	for _, b := range bad {
		if !seen[b] && len(uniq) < 10 {
			seen[b] = true
			uniq = append(uniq, b)
		}
	}
	msg := "unknown or hidden field: " + strings.Join(uniq, ", ")
	if len(bad) > len(uniq) {
		msg += ", …"
	}
	return fieldErrors{"show": msg}
}

// parseUserShow reads ?show= for a user: extra fields, the goals relation and
// goals.<field>. password and unknown names are an error.
func parseUserShow(values []string) (userShow, error) {
	var s userShow
	var bad []string
	for _, name := range showNames(values) {
		switch rel, field, dotted := strings.Cut(name, "."); {
		case name == "email":
			s.Email = true
		case name == "full_name":
			s.FullName = true
		case name == "goals":
			s.Goals = true
		case userDefaultFields[name]:
		case dotted && rel == "goals" && (goalDefaultFields[field] || field == "description"):
			s.Goals = true
			s.GoalDescription = s.GoalDescription || field == "description"
		default:
			bad = append(bad, name)
		}
	}
	return s, showError(bad)
}

// parseGoalShow reads ?show= for a goal: description, the user relation and
// user.<field>. user.password and unknown names are an error.
func parseGoalShow(values []string) (goalShow, error) {
	var s goalShow
	var bad []string
	for _, name := range showNames(values) {
		switch rel, field, dotted := strings.Cut(name, "."); {
		case name == "description":
			s.Description = true
		case name == "user":
			s.User = true
		case goalDefaultFields[name]:
		case dotted && rel == "user" && (userDefaultFields[field] || field == "email" || field == "full_name"):
			s.User = true
			s.UserEmail = s.UserEmail || field == "email"
			s.UserFullName = s.UserFullName || field == "full_name"
		default:
			bad = append(bad, name)
		}
	}
	return s, showError(bad)
}

// appendUser writes the JSON object a client sees for u: the default fields,
// the extras named in s, and goals when s asks for them. password_hash is
// never written.
func appendUser(b []byte, u *User, s userShow, goals []Goal) []byte {
	b = append(b, `{"id":`...)
	b = appendString(b, u.ID)
	b = append(b, `,"username":`...)
	b = appendString(b, u.Username)
	if s.Email {
		b = append(b, `,"email":`...)
		b = appendNullString(b, u.Email)
	}
	if s.FullName {
		b = append(b, `,"full_name":`...)
		b = appendNullString(b, u.FullName)
	}
	b = append(b, `,"created_at":`...)
	b = appendString(b, u.CreatedAt)
	b = append(b, `,"modified_at":`...)
	b = appendString(b, u.ModifiedAt)
	if s.Goals {
		b = append(b, `,"goals":[`...)
		gs := goalShow{Description: s.GoalDescription}
		for i := range goals {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendGoal(b, &goals[i], gs, nil)
		}
		b = append(b, ']')
	}
	return append(b, '}')
}

// maxUserBytes is at least what appendUser writes for u with s and goals
// (a little more: the names and punctuation are counted generously), to
// weigh an answer before it is rendered (see largeAnswers).
func maxUserBytes(u *User, s userShow, goals []Goal) int {
	n := 200 + stringBytes(u.ID) + stringBytes(u.Username) + stringBytes(u.CreatedAt) + stringBytes(u.ModifiedAt)
	if s.Email {
		n += nullStringBytes(u.Email)
	}
	if s.FullName {
		n += nullStringBytes(u.FullName)
	}
	if s.Goals {
		gs := goalShow{Description: s.GoalDescription}
		for i := range goals {
			n += 1 + maxGoalBytes(&goals[i], gs, nil)
		}
	}
	return n
}

// maxGoalBytes is at least what appendGoal writes for g with s and owner.
func maxGoalBytes(g *Goal, s goalShow, owner *User) int {
	n := 200 + stringBytes(g.ID) + stringBytes(g.UserID) + stringBytes(g.Title) + stringBytes(g.Period) +
		stringBytes(g.CreatedAt) + stringBytes(g.ModifiedAt)
	if s.Description {
		n += nullStringBytes(g.Description)
	}
	if s.User && owner != nil {
		n += maxUserBytes(owner, ownerShow(s), nil)
	}
	return n
}

// appendGoal writes the JSON object a client sees for g, with its owner
// embedded when s asks for it and owner is given.
func appendGoal(b []byte, g *Goal, s goalShow, owner *User) []byte {
	b = append(b, `{"id":`...)
	b = appendString(b, g.ID)
	b = append(b, `,"user_id":`...)
	b = appendString(b, g.UserID)
	b = append(b, `,"title":`...)
	b = appendString(b, g.Title)
	b = append(b, `,"period":`...)
	b = appendString(b, g.Period)
	b = append(b, `,"target_minutes":`...)
	b = strconv.AppendInt(b, int64(g.TargetMinutes), 10)
	if s.Description {
		b = append(b, `,"description":`...)
		b = appendNullString(b, g.Description)
	}
	b = append(b, `,"created_at":`...)
	b = appendString(b, g.CreatedAt)
	b = append(b, `,"modified_at":`...)
	b = appendString(b, g.ModifiedAt)
	if s.User && owner != nil {
		b = append(b, `,"user":`...)
		b = appendUser(b, owner, ownerShow(s), nil)
	}
	return append(b, '}')
}
